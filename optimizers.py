"""The two optimizers training uses, Adadelta (the paper's) and Adam, updating each variable with
one of TensorFlow's fused kernels (ResourceApplyAdadelta, ResourceApplyAdam) instead of Keras's
dozen element-wise ops.

The arithmetic is Keras's (the same formulas, slots, names and checkpoints), but each variable
is read and written once per step instead of once per op: on a 2-core CPU Keras's Adadelta took
about a sixth of a discriminator update (its dense layers hold most of the parameters). Sparse
gradients, and variables that are not float32 resource variables, take Keras's own update.
"""
import keras
import tensorflow as tf


def fusable(gradient, *variables):
    """True when TensorFlow's fused kernel can update these variables with this gradient. (A
    variable's .handle, inside a distribution strategy's update, is its current device's copy.)"""
    return not isinstance(gradient, tf.IndexedSlices) and all(
        v.dtype == tf.float32 and hasattr(v, "handle") for v in variables)


class Adadelta(keras.optimizers.Adadelta):
    """keras.optimizers.Adadelta with a fused update (same formulas: accumulate the squared
    gradient, step by -sqrt(delta accumulator + eps) / sqrt(gradient accumulator + eps) *
    gradient, then accumulate the squared step)."""

    def update_step(self, grad, variable, learning_rate):
        index = self._get_variable_index(variable)
        accumulated_grad = self._accumulated_grads[index]
        accumulated_delta = self._accumulated_delta_vars[index]
        if not fusable(grad, variable, accumulated_grad, accumulated_delta):
            return super().update_step(grad, variable, learning_rate)
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyAdadelta(
            var=variable.handle, accum=accumulated_grad.handle,
            accum_update=accumulated_delta.handle, lr=tf.cast(learning_rate, dtype),
            rho=tf.cast(self.rho, dtype), epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(grad, dtype))


class Adam(keras.optimizers.Adam):
    """keras.optimizers.Adam with a fused update (same formulas, with Keras's epsilon outside the
    square root and its bias correction folded into the step size); amsgrad takes Keras's."""

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        if self.amsgrad or not fusable(gradient, variable, m, v):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.handle, v=v.handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))
