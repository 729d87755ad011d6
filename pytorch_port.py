"""The completion network, the context discriminator and the three training steps in PyTorch,
computing what model.py, losses.py and phases.py compute, so that bench.py --pytorch can time both
frameworks on the same work. glcic itself never imports this module; PyTorch is optional
(pip install torch==2.13.0).

Tensors here are NCHW, as PyTorch's layers expect: to_nchw / to_nhwc convert glcic's NHWC
arrays, and from_keras_batch a batch of data_loader.training_dataset. channels_last=True keeps
the same logical NCHW shapes in NHWC memory (torch.channels_last), which oneDNN often runs
faster on a CPU; bench.py times both.

copy_from_keras copies a Keras network's weights into its PyTorch twin, after which both
compute the same outputs (tests/test_pytorch_port.py checks it to 1e-4).

One difference remains in training mode: PyTorch's batch norm updates its running variance
with the unbiased batch variance (n / (n - 1) times Keras' biased one); the normalisation
itself, and so every output and gradient, is the same.
"""
import contextlib
import os
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from model import COMPLETION_LAYERS, FC_UNITS, GLOBAL_CHANNELS, LOCAL_CHANNELS

# ---------------------------------------------------------------------------------------------
# The networks (model.py's, layer for layer; the layer names are the Keras layers' names)


def conv_bn_relu(name, channels_in, channels, kernel, stride=1, dilation=1, transpose=False):
    """model.conv_bn_relu: symmetric zero padding (k - 1) / 2 * dilation, 4x4 transposed
    convolutions padded by 1, batch norm with epsilon 1e-5 and momentum 0.1."""
    if transpose:
        conv = nn.ConvTranspose2d(channels_in, channels, kernel, stride, padding=1)
    else:
        conv = nn.Conv2d(channels_in, channels, kernel, stride,
                         padding=(kernel - 1) // 2 * dilation, dilation=dilation)
    return [(name, conv), (name.replace("conv", "bn"), nn.BatchNorm2d(channels, 1e-5, 0.1)),
            (name.replace("conv", "relu"), nn.ReLU())]


def keras_initialisation(module):
    """Keras' defaults: Glorot-uniform kernels, zero biases (PyTorch's differ)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


class CompletionNetwork(nn.Module):
    """(N, 4, H, W): RGB in [0, 1] (the hole's content is ignored) and the hole mask -> RGB in
    [0, 1], (N, 3, H, W). H and W divisible by 4."""

    def __init__(self, width_divisor=1, mean_pixel=(0.5, 0.5, 0.5)):
        super().__init__()
        self.register_buffer("mean_pixel", torch.tensor(mean_pixel, dtype=torch.float32))
        layers, channels_in = [], 4
        for i, (kind, kernel, dilation, stride, channels) in enumerate(COMPLETION_LAYERS, 1):
            if kind == "output":
                layers += [(f"conv{i}", nn.Conv2d(channels_in, channels, kernel,
                                                  padding=(kernel - 1) // 2)),
                           ("sigmoid", nn.Sigmoid())]
            else:
                channels //= width_divisor
                layers += conv_bn_relu(f"conv{i}", channels_in, channels, kernel, stride,
                                       dilation, transpose=kind == "deconv")
            channels_in = channels
        self.layers = nn.Sequential(OrderedDict(layers))
        keras_initialisation(self)

    def forward(self, inputs):
        """model.MeanCentre, then Table 1."""
        rgb, mask = inputs[:, :3], inputs[:, 3:]
        centred = (rgb - self.mean_pixel.view(1, 3, 1, 1)) * (1.0 - mask)
        return self.layers(torch.cat([centred, mask], dim=1))


def discriminator_branch(prefix, channel_list, size, width_divisor):
    """5x5 stride-2 convolutions, then the FC layer; (layers, size of the last feature map)."""
    layers, channels_in = [], 3
    for i, channels in enumerate(channel_list, 1):
        layers += conv_bn_relu(f"{prefix}_conv{i}", channels_in, channels // width_divisor, 5,
                               stride=2)
        channels_in, size = channels // width_divisor, (size - 1) // 2 + 1
    layers += [(f"{prefix}_flatten", nn.Flatten()),
               (f"{prefix}_fc", nn.Linear(channels_in * size * size, FC_UNITS // width_divisor)),
               (f"{prefix}_fc_relu", nn.ReLU())]
    return nn.Sequential(OrderedDict(layers))


class ContextDiscriminator(nn.Module):
    """(whole images (N, 3, S, S), local patches (N, 3, L, L)) -> real/fake logits (N, 1)."""

    def __init__(self, image_size, local_size, width_divisor=1):
        super().__init__()
        self.global_branch = discriminator_branch("global", GLOBAL_CHANNELS, image_size,
                                                  width_divisor)
        self.local_branch = discriminator_branch("local", LOCAL_CHANNELS, local_size,
                                                 width_divisor)
        self.logit = nn.Linear(2 * FC_UNITS // width_divisor, 1)
        keras_initialisation(self)

    def forward(self, images, patches):
        features = torch.cat([self.global_branch(images), self.local_branch(patches)], dim=1)
        return self.logit(features)


# ---------------------------------------------------------------------------------------------
# Layouts and weights


def to_nchw(array, channels_last=False):
    """A NumPy or TensorFlow (N, H, W, C) array as a float32 (N, C, H, W) tensor; in NHWC memory
    with channels_last."""
    tensor = torch.from_numpy(np.array(array, np.float32)).permute(0, 3, 1, 2)
    return tensor.contiguous(memory_format=torch.channels_last if channels_last
                             else torch.contiguous_format)


def to_nhwc(tensor):
    """A (N, C, H, W) tensor as a NumPy (N, H, W, C) array."""
    return tensor.detach().permute(0, 2, 3, 1).cpu().numpy()


def from_keras_batch(batch, channels_last=False):
    """A batch of data_loader.training_dataset as tensors: image (N,3,S,S), mask (N,1,S,S) and
    the local patches' (y, x) offsets, local_fake and local_real (N, 2)."""
    return dict(image=to_nchw(batch["image"], channels_last),
                mask=to_nchw(batch["mask"], channels_last),
                local_fake=torch.from_numpy(np.asarray(batch["local_fake"], np.int64)),
                local_real=torch.from_numpy(np.asarray(batch["local_real"], np.int64)))


def keras_weights(module, layer, keras_model):
    """The Keras layer's weights in the PyTorch module's layouts. Kernels: Keras (kh, kw, in,
    out) -> (out, in, kh, kw); transposed, Keras (kh, kw, out, in) -> (in, out, kh, kw), the
    same permutation and no flip. A Keras Dense after Flatten reads its input in (h, w, c)
    order, PyTorch's Linear after Flatten in (c, h, w) order: its inputs are reordered."""
    weights = layer.get_weights()
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        return [weights[0].transpose(3, 2, 0, 1), weights[1]]
    if isinstance(module, nn.Linear):
        kernel = weights[0].T
        if layer.name.endswith("_fc"):
            h, w, c = keras_model.get_layer(layer.name[:-3] + "_flatten").input.shape[1:]
            kernel = kernel.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(len(kernel), -1)
        return [kernel, weights[1]]
    return weights  # batch norm: gamma, beta, moving mean, moving variance


def copy_from_keras(torch_module, keras_model):
    """Copy the weights of model.build_completion_network or build_context_discriminator into
    their CompletionNetwork or ContextDiscriminator twin (same width_divisor and sizes)."""
    with torch.no_grad():
        for name, module in torch_module.named_modules():
            if isinstance(module, nn.BatchNorm2d):
                targets = [module.weight, module.bias, module.running_mean, module.running_var]
            elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                targets = [module.weight, module.bias]
            else:
                continue
            layer = keras_model.get_layer(name.rsplit(".", 1)[-1])
            for target, value in zip(targets, keras_weights(module, layer, keras_model),
                                     strict=True):
                if tuple(target.shape) != value.shape:
                    raise ValueError(f"{layer.name}: Keras weight of shape {value.shape},"
                                     f" PyTorch {tuple(target.shape)}")
                target.copy_(torch.from_numpy(np.ascontiguousarray(value, np.float32)))
        if isinstance(torch_module, CompletionNetwork):
            mean_pixel = keras_model.get_layer("mean_centre").get_weights()[0]
            torch_module.mean_pixel.copy_(torch.from_numpy(mean_pixel))


# ---------------------------------------------------------------------------------------------
# Training: losses.py's losses, phases.py's networks, optimizers and steps


def use_available_cores():
    """One PyTorch thread per core this process may run on (TensorFlow's default too)."""
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count())


def completion_input(images, masks, mean_pixel):
    """utils.completion_input: the hole filled with the mean pixel, plus the mask."""
    filled = images * (1.0 - masks) + mean_pixel.view(1, 3, 1, 1) * masks
    return torch.cat([filled, masks], dim=1)


def crop_patches(images, offsets, size):
    """utils.crop_patches: (N, C, S, S) -> (N, C, size, size) at per-image (y, x) offsets."""
    return torch.stack([image[:, y:y + size, x:x + size]
                        for image, (y, x) in zip(images, offsets.tolist())])


def reconstruction_loss(images, outputs, masks, kind="mse"):
    diff = masks * (outputs - images)
    return (diff.square() if kind == "mse" else diff.abs()).mean()


def bce(logits, label):
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


def discriminator_loss(real_logits, fake_logits):
    return bce(real_logits, 1.0) + bce(fake_logits, 0.0)


def adversarial_loss(fake_logits):
    return bce(fake_logits, 1.0)


def build_training(config, mean_pixel=(0.5, 0.5, 0.5), channels_last=False):
    """phases.build_training in PyTorch: (G, D, G's optimizer, D's optimizer), float32, Adadelta
    as in the paper (learning rate 1.0, rho 0.9, epsilon 1e-6: Torch's defaults)."""
    if config.optimizer != "adadelta":
        raise ValueError(f"pytorch_port trains with adadelta only, not {config.optimizer}")
    use_available_cores()
    G = CompletionNetwork(config.width_divisor, mean_pixel)
    D = ContextDiscriminator(config.image_size, config.local_size, config.width_divisor)
    if channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    optimizers = [torch.optim.Adadelta(network.parameters(), lr=config.learning_rate, rho=0.9,
                                       eps=1e-6) for network in (G, D)]
    return G, D, *optimizers


def autocast(precision=None):
    """PyTorch's CPU autocast to `precision` ("bfloat16" or "float16"); None: off."""
    if precision is None:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=getattr(torch, precision))


def make_steps(G, D, g_opt, d_opt, config, autocast_to=None):
    """phases.make_steps in PyTorch (without --accumulate): {phase: step}, each step taking a
    batch of from_keras_batch and returning its losses as tensors. autocast_to: "bfloat16" (or
    "float16") runs the networks' forward passes under PyTorch's CPU autocast, its own mixed
    precision (weights, optimizers and losses float32); the backward passes follow."""
    L = config.local_size

    def complete(batch):
        with autocast(autocast_to):
            outputs = G(completion_input(batch["image"], batch["mask"], G.mean_pixel))
        outputs = outputs.float()
        return outputs, batch["image"] * (1.0 - batch["mask"]) + outputs * batch["mask"]

    def discriminate(images, patches_at):
        with autocast(autocast_to):
            logits = D(images, crop_patches(images, patches_at, L))
        return logits.float()

    def update(optimizer, network, loss):
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=list(network.parameters()))
        optimizer.step()

    def discriminator_update(batch, completed):
        real = discriminate(batch["image"], batch["local_real"])
        fake = discriminate(completed.detach(), batch["local_fake"])
        loss = discriminator_loss(real, fake)
        update(d_opt, D, loss)
        return loss

    def completion_step(batch):
        G.train()
        loss = reconstruction_loss(batch["image"], complete(batch)[0], batch["mask"],
                                   config.recon_loss)
        update(g_opt, G, loss)
        return {"reconstruction": loss.detach()}

    def discriminator_step(batch):
        G.eval()
        D.train()
        with torch.no_grad():
            completed = complete(batch)[1]
        return {"discriminator": discriminator_update(batch, completed).detach()}

    def joint_step(batch):
        # One forward pass of the completion network serves both updates: the discriminator's
        # first, then the completion network's against the updated discriminator.
        G.train()
        D.train()
        outputs, completed = complete(batch)
        d_loss = discriminator_update(batch, completed)
        recon = reconstruction_loss(batch["image"], outputs, batch["mask"], config.recon_loss)
        adv = adversarial_loss(discriminate(completed, batch["local_fake"]))
        update(g_opt, G, recon + config.alpha * adv)
        return {"discriminator": d_loss.detach(), "reconstruction": recon.detach(),
                "adversarial": adv.detach()}

    return {1: completion_step, 2: discriminator_step, 3: joint_step}
