"""The entropy bottleneck trained the Entropic Student's way, at CPU scale (Fashion-MNIST, RB1): the
fair frontier's factorized codec.

    python -m bottlenet_jax.experiments frontier --dry_run      # this config against every rival, 3 seeds
    python train.py --config=configs/fashion_mnist_demo.py --workdir=/tmp/fm_base --config.split.after=0 \
        --config.codec.name=identity --config.num_epochs=2
    python train.py --config=configs/fashion_mnist_entropic_student.py --workdir=/tmp/fm_es \
        --config.init_from=/tmp/fm_base --config.num_epochs=2 --config.rate_lambda=2e-4
What differs from configs/fashion_mnist_entropy.py (the same network, codec and split point):
  unit     two strided convs each side (split.layers=2, 16 wide between): RB1's 28x28x8 -> 7x7x8
           symbols, a quarter of the one-conv unit's 14x14x8, and an analysis transform that sees
           4x4 patches of RB1 instead of 2x2;
  recipe   the first stage1_steps train the unit and the codec only, so a pretrained cloud half is
           not trained on a random unit's output; with a teacher, + distill.feature_weight *
           MSE(restored features, the teacher's RB1 features) (the frontier runs without one);
  tables   codec.fit_context=neighbours: after training, the integer tables are fitted to the
           symbols the encoder emits on the training split, one per element and state of its
           causal neighbours (codecs/entropy/tables.py): the codec's state, sent once.
Measured figures, each with its command, commit and date: results/README.md.
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
