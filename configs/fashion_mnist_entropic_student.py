"""The entropy bottleneck trained the Entropic Student's way, at CPU scale (Fashion-MNIST, RB1).

    python -m bottlenet_jax.experiments.frontier --config configs/fashion_mnist_entropic_student.py \\
        --workdir workdir/frontier_e4 --out results/fashion_mnist/frontier_fitted --finetune_epochs 4 \\
        --distill off --lambdas 1e-4,2e-4,3e-4,4e-4,5e-4 --qualities 10,20,30,50,70,90
    python train.py --config=configs/fashion_mnist_demo.py --workdir=/tmp/fm_base --config.split.after=0 \\
        --config.codec.name=identity --config.num_epochs=2
    python train.py --config=configs/fashion_mnist_entropic_student.py --workdir=/tmp/fm_es \\
        --config.init_from=/tmp/fm_base --config.distill.teacher=/tmp/fm_base

What differs from configs/fashion_mnist_entropy.py (the same network, codec and split point):
  unit     two strided convs each side (split.layers=2, 16 wide between): RB1's 28x28x8 -> 7x7x8
           symbols, a quarter of the one-conv unit's 14x14x8, and an analysis transform that sees
           4x4 patches of RB1 instead of 2x2;
  recipe   with a teacher, + distill.feature_weight * MSE(restored features, the teacher's RB1
           features) beside the logit distillation (Matsubara et al. WACV 2022 train the bottleneck
           on this target first); the first stage1_steps train the unit and the codec only, so the
           pretrained cloud half is not trained on a random unit's output;
  length   4 epochs (the frontier's --finetune_epochs 4, for every codec it compares): the rate keeps
           falling long after the accuracy has recovered;
  tables   codec.fit_context=neighbours: after training, the integer tables are fitted to the
           symbols the encoder emits on the training split, one per element and state of its
           causal neighbours (codecs/entropy_model.py); the accuracy is the density tables', the
           bytes about half.
Without a teacher the feature term is off (distill.feature_weight needs one, like distill.weight);
at this scale the runs without one send fewer bytes at every rate_lambda (results/fashion_mnist/frontier_e4).
Figures over seeds, with the command, commit and date: results/fashion_mnist/frontier_fitted/results.md.
Expected (that table, 3 seeds, header commit 739a436, 2 CPU cores, 2026-12-03; baseline 90.57 ± 0.42 %),
without a teacher: rate_lambda 1e-4 sends 77.1 ± 1.3 B per image at 90.78 ± 0.22 % test top-1,
2e-4 61.2 ± 0.6 B at 90.61 ± 0.35 %, 3e-4 40.5 ± 1.5 B at 89.95 ± 0.36 %, 4e-4 30.5 ± 3.4 B at
89.56 ± 0.39 %, 5e-4 24.9 ± 1.6 B at 89.22 ± 0.60 %; within 1 point of each seed's baseline
34.5 ± 6.9 B at 89.71 ± 0.47 %, 0.135 ± 0.045x the input image's JPEG bytes and 0.324 ± 0.045x
BottleNet JPEG C'=2's (fine-tuned as long: 107.6 ± 23.3 B at 90.35 ± 0.43 %); 0.152 ± 0.053x and
0.442 ± 0.084x with JPEG's 27 B of fixed framing not counted (framing.md beside that table).
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
