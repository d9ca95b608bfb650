from bottlenet_jax.serve.server import main

if __name__ == "__main__":
    main()
