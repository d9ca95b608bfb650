"""torchvision weight import: same random weights -> same logits as a torch forward pass.

torchvision itself cannot be installed beside the torch wheel available here, so the reference is
a torch ResNet-50 written with torchvision's exact module names and forward (v1.5, BN eps 1e-5);
its state_dict keys are what torchvision.models.resnet50().state_dict() has. In the slow stage
(`make test-slow` installs torch for it: helpers.slow_extra).
"""

import numpy as np
import pytest

from helpers import slow_extra

pytestmark = pytest.mark.slow


def torch_resnet50(torch):
    """The reference network's class, built once torch is imported (the module imports without it,
    so `make test`, which has no torch, deselects this test instead of reporting a skip)."""
    nn = torch.nn

    class TorchBottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, width * 4, 1, bias=False), nn.BatchNorm2d(width * 4)
            self.relu = nn.ReLU()
            self.downsample = None
            if stride != 1 or cin != width * 4:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, width * 4, 1, stride, bias=False), nn.BatchNorm2d(width * 4)
                )

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.relu(y + (self.downsample(x) if self.downsample is not None else x))

    class TorchResNet50(nn.Module):
        def __init__(self, num_classes=1000):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
            self.relu, self.maxpool = nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            cin = 64
            for i, (n, w) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
                blocks = []
                for j in range(n):
                    blocks.append(TorchBottleneck(cin, w, 2 if (j == 0 and i > 0) else 1))
                    cin = w * 4
                setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(2048, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for i in range(1, 5):
                x = getattr(self, f"layer{i}")(x)
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return TorchResNet50


def test_torchvision_resnet50_import_matches_logits(tmp_path):
    import jax

    from bottlenet_jax.convert import load_torchvision
    from bottlenet_jax.models import ResNet

    torch = slow_extra("torch")
    nn = torch.nn
    torch.manual_seed(0)
    net = torch_resnet50(torch)().eval()
    with torch.no_grad():  # non-trivial BN statistics, so the running averages are really used
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
                m.bias.uniform_(-0.1, 0.1)
    assert sum(p.numel() for p in net.parameters()) == 25_557_032  # torchvision's resnet50
    path = str(tmp_path / "r50.pth")
    torch.save(net.state_dict(), path)
    x = np.random.default_rng(0).normal(size=(2, 3, 96, 96)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    for p in (path, _to_npz(path, tmp_path)):
        params, stats = load_torchvision(p)
        got = jax.jit(ResNet(depth=50).apply)({"params": params, "batch_stats": stats}, x.transpose(0, 2, 3, 1))
        assert np.abs(np.asarray(got) - want).max() <= 1e-4


def _to_npz(path, tmp_path):
    from bottlenet_jax.convert import read_state_dict

    out = str(tmp_path / "r50.npz")
    np.savez(out, **read_state_dict(path))
    return out
