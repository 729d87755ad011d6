"""The two networks of Iizuka et al., "Globally and Locally Consistent Image Completion" (2017).

Each layer list below is the paper's Table 1 (completion network) and Table 2 (context
discriminator), row by row, so the code can be checked against the paper line by line.
"""
import keras
from keras import layers

# Completion network (Table 1): (kind, kernel, dilation, stride, channels out).
# "deconv" rows are 4x4 transposed convolutions with stride 1/2, i.e. x2 upsampling.
COMPLETION_LAYERS = [
    ("conv", 5, 1, 1, 64),
    ("conv", 3, 1, 2, 128),
    ("conv", 3, 1, 1, 128),
    ("conv", 3, 1, 2, 256),
    ("conv", 3, 1, 1, 256),
    ("conv", 3, 1, 1, 256),
    ("conv", 3, 2, 1, 256),
    ("conv", 3, 4, 1, 256),
    ("conv", 3, 8, 1, 256),
    ("conv", 3, 16, 1, 256),
    ("conv", 3, 1, 1, 256),
    ("conv", 3, 1, 1, 256),
    ("deconv", 4, 1, 2, 128),
    ("conv", 3, 1, 1, 128),
    ("deconv", 4, 1, 2, 64),
    ("conv", 3, 1, 1, 32),
    ("output", 3, 1, 1, 3),
]

# Context discriminator (Table 2): 5x5 stride-2 convolutions, then one 1024-wide FC layer.
GLOBAL_CHANNELS = [64, 128, 256, 512, 512, 512]
LOCAL_CHANNELS = [64, 128, 256, 512, 512]
FC_UNITS = 1024


def conv_bn_relu(x, channels, kernel, stride=1, dilation=1, transpose=False, name="conv"):
    conv = layers.Conv2DTranspose if transpose else layers.Conv2D
    x = conv(channels, kernel, strides=stride, dilation_rate=dilation, padding="same",
             name=name)(x)
    # momentum 0.9 is Torch's default (0.1 there), as in the paper's implementation.
    x = layers.BatchNormalization(momentum=0.9, name=name.replace("conv", "bn"))(x)
    return layers.ReLU(name=name.replace("conv", "relu"))(x)


def build_completion_network():
    """RGB with the hole filled by the mean pixel, plus the hole mask -> RGB in [0, 1].

    Fully convolutional: any height and width divisible by 4.
    """
    inputs = keras.Input((None, None, 4), name="masked_image_and_mask")
    x = inputs
    for i, (kind, kernel, dilation, stride, channels) in enumerate(COMPLETION_LAYERS, 1):
        if kind == "output":
            x = layers.Conv2D(channels, kernel, padding="same", activation="sigmoid",
                              name=f"conv{i}")(x)
        else:
            x = conv_bn_relu(x, channels, kernel, stride, dilation,
                             transpose=kind == "deconv", name=f"conv{i}")
    return keras.Model(inputs, x, name="completion_network")


def discriminator_branch(x, channels, prefix):
    for i, c in enumerate(channels, 1):
        x = conv_bn_relu(x, c, 5, stride=2, name=f"{prefix}_conv{i}")
    x = layers.Flatten(name=f"{prefix}_flatten")(x)
    return layers.Dense(FC_UNITS, activation="relu", name=f"{prefix}_fc")(x)


def build_context_discriminator(image_size, local_size):
    """[whole images (B,S,S,3), local patches (B,L,L,3)] -> real/fake logits (B, 1)."""
    images = keras.Input((image_size, image_size, 3), name="image")
    patches = keras.Input((local_size, local_size, 3), name="local_patch")
    features = layers.Concatenate(name="concat")([
        discriminator_branch(images, GLOBAL_CHANNELS, "global"),
        discriminator_branch(patches, LOCAL_CHANNELS, "local"),
    ])
    logits = layers.Dense(1, name="logit")(features)
    return keras.Model([images, patches], logits, name="context_discriminator")
