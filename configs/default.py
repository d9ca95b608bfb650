"""Defaults every config overrides: ResNet-50 v1.5 on TFDS ImageNet, BottleNet unit after RB1, host JPEG.

Not run on its own; see the other files here. Keys are grouped as the library reads them:
model / split / codec (the network), dataset keys (input pipeline), optimizer keys (train_lib),
checkpoint keys (checkpoint.py).
"""

import ml_collections

from bottlenet_jax.codecs import codec_settings


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0

    # --- network
    c.model = ml_collections.ConfigDict(
        dict(depth=50, width=64, stem="imagenet", num_classes=1000, dtype="float32")
    )  # dtype: compute dtype (bfloat16 on accelerators)
    # split.after: RBk the network is cut after (0 = plain model). unit: BottleNet reduction/restoration.
    # condition: a channel codec's condition (sigma, p) is fed to the reduction unit (BottleNet++).
    # layers > 1: each unit has (layers - 1) more strided convs (+ BN + ReLU, `hidden` wide; 0: as
    # wide as RBk's features) before the last: the features shrink by stride**layers.
    c.split = ml_collections.ConfigDict(
        dict(after=1, unit=True, channels=8, kernel=2, stride=2, condition=True, layers=1, hidden=0)
    )
    # codec: `name` (identity | uint8 | jpeg | lightweight | awgn | bec | entropy) and that codec's settings,
    # with the defaults the codec itself declares (bottlenet_jax/codecs; an unknown key is an error).
    # To switch codec, replace the block: c.codec = ml_collections.ConfigDict(codec_settings("awgn")).
    c.codec = ml_collections.ConfigDict(codec_settings("jpeg"))

    # --- data: a TFDS dataset, prepared once as records (python -m bottlenet_jax.data.prepare NAME)
    c.dataset = "imagenet2012"
    c.data_dir = ml_collections.config_dict.placeholder(str)  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.train_split = "train"
    # validation_split: held out from the training data (e.g. "train[:10000]" with train_split
    # "train[10000:]"); periodic evals run on it and pick the "best" checkpoint. eval_split is the
    # test split, evaluated once at the end with that checkpoint. "": no selection (last checkpoint).
    c.validation_split = ""
    c.eval_split = "validation"
    c.image_size = 224
    c.preprocess = "imagenet"  # imagenet: random-resized-crop + flip / centre crop; small: flip only
    c.mean = (0.485, 0.456, 0.406)
    c.std = (0.229, 0.224, 0.225)
    # Loader parallelism (data/loader.py): worker processes (-1: one per host core; 0: in this
    # process) x decode threads each. With the host JPEG codec, leave it codec.workers cores.
    c.data_workers = -1
    c.data_threads = 1
    c.eval_examples = -1  # -1: the whole eval split
    # (lo, hi): each training image through train_input_format ("jpeg" or "webp") at a quality drawn
    # from lo..hi (a classifier of the input image fine-tuned for what its receiver sees); (): off
    c.train_input_jpeg = ()
    c.train_input_format = "jpeg"

    # --- optimisation
    c.batch_size = 256  # global
    c.eval_batch_size = 256
    c.num_epochs = 90.0
    c.num_train_steps = -1  # > 0 overrides num_epochs
    c.optimizer = "sgd"  # sgd (Nesterov) | adam
    c.learning_rate = 0.1  # per 256 examples; scaled linearly with batch_size
    c.momentum = 0.9
    c.weight_decay = 1e-4
    c.warmup_epochs = 5.0
    # Stage 1 trains only params whose path matches stage1_trainable (e.g. the bottleneck unit with a
    # frozen backbone), then everything trains (BottleNet++'s recipe). 0 steps = one stage.
    c.stage1_steps = 0
    c.stage1_trainable = "reduce|restore|codec"
    # The objective: + rate_lambda * bits/sample (codecs with a rate model: codec.name=entropy), and
    # with distill.teacher (a trained workdir) the Entropic Student's task loss
    # (1 - weight) * CE + weight * T^2 * KL(teacher_T || student_T), T = distill.temperature;
    # + feature_weight * MSE(restored features, the teacher's RBk features) (head distillation).
    c.rate_lambda = 0.0
    # the codec's parameters it names (a hyperprior's networks) train with Adam at codec_learning_rate
    # (the network's warm-up + cosine), its auxiliary ones (medians) on its aux loss with Adam at
    # aux_learning_rate, apart from the network's optimizer (steps.create_optimizer); 1e-2 lets the
    # medians track a moving density within a short run (CompressAI's 1e-3 is for millions of steps)
    c.codec_learning_rate = 1e-3
    c.aux_learning_rate = 1e-2
    c.distill = ml_collections.ConfigDict(dict(teacher="", weight=0.5, temperature=1.0, feature_weight=0.0))

    # --- init / checkpoints / logging
    c.init_from = ""  # "": random; *.pth / *.npz: torchvision ResNet weights; a dir: a checkpoint of ours
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.eval_every_steps = -1  # -1: once per epoch
    c.log_every_steps = 50
    return c
