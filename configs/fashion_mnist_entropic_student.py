"""The entropy bottleneck trained the Entropic Student's way, at CPU scale (Fashion-MNIST, RB1): the
fair frontier's learned codec.

    python -m bottlenet_jax.experiments.frontier      # this config against every rival, 3 seeds (its docstring)
    python train.py --config=configs/fashion_mnist_demo.py --workdir=/tmp/fm_base --config.split.after=0 \\
        --config.codec.name=identity --config.num_epochs=2
    python train.py --config=configs/fashion_mnist_entropic_student.py --workdir=/tmp/fm_es \\
        --config.init_from=/tmp/fm_base --config.num_epochs=2 --config.rate_lambda=2e-4
What differs from configs/fashion_mnist_entropy.py (the same network, codec and split point):
  unit     two strided convs each side (split.layers=2, 16 wide between): RB1's 28x28x8 -> 7x7x8
           symbols, a quarter of the one-conv unit's 14x14x8, and an analysis transform that sees
           4x4 patches of RB1 instead of 2x2;
  recipe   the first stage1_steps train the unit and the codec only, so the pretrained cloud half
           is not trained on a random unit's output; with a teacher, + distill.feature_weight *
           MSE(restored features, the teacher's RB1 features) (the frontier runs without one);
  tables   codec.fit_context=neighbours: after training, the integer tables are fitted to the
           symbols the encoder emits on the training split, one per element and state of its
           causal neighbours (codecs/entropy/tables.py): the codec's state, sent once.
Expected (results/fashion_mnist/frontier_fair/results.md, 3 seeds, 2026-12-05, commit 0baa8a7; 2 + 2
epochs; validation top-1, equally trained baseline 92.03 ± 0.25 %): rate_lambda 5e-5 79.8 ± 1.4 B at
90.42 ± 0.55 %, 1e-4 74.3 ± 1.5 B at 90.45 ± 0.55 %, 2e-4 71.8 ± 0.6 B at 90.57 ± 0.33 %, 4e-4
53.8 ± 1.3 B at 90.39 ± 0.73 %, 8e-4 24.2 ± 1.9 B at 88.74 ± 0.54 %, 1.6e-3 14.1 ± 0.7 B at
87.41 ± 0.93 %; none within 1 point of the baseline; at matched accuracy 0.41 ± 0.11x the input
image's JPEG bytes (λ=4e-4). Those bytes are the range coder's (codec.stream=range, the format
then); the default rANS streams are within 1 B of them (benchmarks/README.md, "Entropy coding").
The same 4 epochs from scratch, codec in the loop from the first step (seeds 0 and 1 so far):
    python -m bottlenet_jax.experiments.frontier --recipe scratch --seeds 0,1
Expected (results/fashion_mnist/frontier_fair_scratch/results.md, commit 5d99b23, 2 CPU cores,
2026-12-05; validation top-1, rANS bytes, 2 seeds): rate_lambda 5e-5 76.8 ± 4.4 B at 91.58 ± 0.03 %,
1e-4 46.3 ± 1.2 B at 90.96 ± 0.14 %, 2e-4 26.7 ± 0.5 B at 91.01 ± 0.13 %, 4e-4 17.8 ± 0.1 B at
90.18 ± 0.20 %, 8e-4 13.0 ± 1.1 B at 89.71 ± 0.30 %, 1.6e-3 10.5 ± 1.4 B at 88.51 ± 0.24 %; an
operating point in seed 0 only (5e-5: 0.46x the input image's JPEG bytes on test).
"""

from configs import fashion_mnist_entropy


def get_config():
    c = fashion_mnist_entropy.get_config()
    c.split.update(layers=2, hidden=16)
    c.distill.feature_weight = 1.0
    c.stage1_steps = 200
    c.rate_lambda = 4e-4
    c.num_epochs = 4.0
    c.codec.fit_context = "neighbours"  # integer tables fitted after training: per element and neighbour state
    return c
