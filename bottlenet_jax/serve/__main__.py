from bottlenet_jax.serve.server import main

main()
