"""A test-local transcription of the module structure of akamaster/pytorch_resnet_cifar10's
`resnet.py` (the popular third-party CIFAR ResNet port), written from its description for
the tests: an independent implementation to compare convzoo's `resnet*_cifar` against.

What matters, as in the original: attribute names `conv1`, `bn1`, `layer1..3` of
`BasicBlock(conv1, bn1, conv2, bn2, shortcut)`, `linear`; the option-A shortcut is a
parameter-free lambda that subsamples by 2 and zero-pads `planes // 4` channels on EACH side
of the channel dimension; global average pooling by `F.avg_pool2d` over the whole map. Its
trainer saves `{"state_dict": DataParallel(model).state_dict(), "best_prec1": ...}`, so the
keys carry a `module.` prefix; `save_like_akamaster` writes exactly that.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class Block(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes:
            pad = planes // 4
            self.shortcut = Lambda(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad)))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, n, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin, stages = 16, []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for j in range(n):
                blocks.append(Block(cin, planes, stride if j == 0 else 1))
                cin = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


def randomized(n=3, seed=0):
    """resnet(6n+2) with random weights and non-trivial BN statistics, in eval mode."""
    torch.manual_seed(seed)
    net = CifarResNet(n)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def save_like_akamaster(net, path):
    """What its trainer.py writes: DataParallel keys and the best accuracy beside them."""
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "best_prec1": 91.73}, path)
