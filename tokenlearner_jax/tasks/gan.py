"""The 'gan' task: an unconditional generator trained against a discriminator, evaluated by the Fréchet
distance of its exponential moving average's samples against the eval split (tasks/base.py contract).

- Loss: the hinge loss of SAGAN (arXiv 1805.08318), which GenNesT is compared with:
  L_D = E[relu(1 - D(x))] + E[relu(1 + D(G(z)))],  L_G = -E[D(G(z))],  z ~ N(0, I).
- One train step: `discriminator_steps` discriminator updates, each on its share of the global batch's
  real images and as many fresh samples, then one generator update on a whole batch of samples. The
  generator runs in training mode (batch statistics of BatchNorm, if any; their running averages are
  updated by the generator update only); the discriminator's spectral-norm estimates are updated by its
  own updates and frozen while it judges the generator.
- Two Adam optimizers from tasks/optimizer.make_optimizer, by default SAGAN's two-timescale recipe:
  learning rates 1e-4 (generator) and 4e-4 (discriminator), b1 = 0, b2 = 0.9, constant. The NesT paper's
  text was not available to check its GenNesT recipe against; these are SAGAN's, the baseline's.
- An EMA of the generator's parameters (tasks/base.ema_update), which is what eval_step samples.
- Eval: the features (evaluate/frechet.py, `config.gan.fd`) of every real eval image and of as many
  samples of the EMA generator; the accumulator reduces them to 'fd'. A batch's latents are drawn from
  `fd.seed` folded with a fingerprint of the batch's pixels (the task sees no batch index), so every eval
  of a run uses the same latents for the same split, and different batches get different ones.

The state holds both networks' parameters, their other variable collections (BatchNorm statistics,
spectral-norm vectors), both optimizer states, the generator EMA and the step, so a checkpoint restores
all of it. `features` does not apply (no few-shot evaluation of a GAN).
"""

import json
import os
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from tokenlearner_jax import data, models
from tokenlearner_jax.evaluate import frechet
from tokenlearner_jax.models import flops
from tokenlearner_jax.models import gennest, sagan_discriminator, sagan_generator  # noqa: F401  (registration)
from tokenlearner_jax.tasks import base, optimizer
from tokenlearner_jax.weights import init_from


def _adam(learning_rate: float) -> dict:
    return optimizer.default_config(name="adam", learning_rate=learning_rate, b1=0.0, b2=0.9, decay="constant",
                                    weight_decay=0.0, grad_clip_norm=0.0)


def default_config() -> dict:
    """The fields of `config` this task reads: the `gan` section, with its defaults.

    generator, discriminator: model sections (`models.config(name, ...)`; GenNesT and the SAGAN-style
      discriminator by default; 'sagan_generator' is the convolutional baseline). A config file switches a
      network by replacing its whole section.
    generator_optimizer, discriminator_optimizer: tasks/optimizer.py sections (SAGAN's recipe by default).
    discriminator_steps: discriminator updates per generator update, each on its share of the batch.
    ema_decay, ema_dynamic_decay: the generator EMA (tasks/base.ema_update), which eval samples.
    fd: the Fréchet distance's features: network 'classifier' (path: the workdir of a classifier run),
      'inception_v3' or 'inception_v3_fid' (path: a weights file, evaluate/frechet.py); seed of the eval
      latents; train_command: the command that makes `path`, quoted by the error when it is missing."""
    return dict(gan=dict(
        generator=dict(gennest.default_config(), name="gennest"),
        discriminator=dict(sagan_discriminator.default_config(), name="sagan_discriminator"),
        generator_optimizer=_adam(1e-4),
        discriminator_optimizer=_adam(4e-4),
        discriminator_steps=1,
        ema_decay=0.999,
        ema_dynamic_decay=True,
        fd=dict(network="classifier", path="", seed=0, train_command=""),
    ))


def _pre_logits(model, variables, images):
    _, state = model.apply(variables, images, train=False, mutable=["intermediates"])
    pre_logits = state["intermediates"].get("pre_logits")
    if pre_logits is None:
        raise ValueError(f"{type(model).__name__} sows no 'pre_logits' intermediate to take features from")
    return pre_logits[0].astype(jnp.float32)


def classifier_network(workdir: str) -> frechet.FeatureNetwork:
    """The pre-logit features of the latest checkpoint of a classification run in `workdir`.

    The run's `config.json` gives the model and the normalisation and image size it was trained with;
    images are converted from [-1, 1] to that normalisation and resized (bilinear) to that size."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"config.gan.fd.path={workdir!r}: no config.json there; expected the workdir of a "
                                f"classification run")
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    model_config = models.config(saved["model"]["name"])
    model_config.update(saved["model"])
    normalize, size = saved["dataset"]["normalize"], saved["dataset"]["image_size"]
    model = models.build(model_config)
    variables, step = init_from.restore_variables(workdir)
    probe = jax.eval_shape(lambda: _pre_logits(model, variables, jnp.zeros((1, size, size, 3), jnp.float32)))

    def apply(images):
        if images.shape[1:3] != (size, size):
            images = jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), "bilinear")
        return _pre_logits(model, variables, frechet.normalize_from_minus_one_one(images, normalize))

    name = f"classifier {model_config.name} ({os.path.abspath(workdir)}, step {step}) pre-logits, {probe.shape[1]}-d"
    return frechet.FeatureNetwork(name=name, dim=int(probe.shape[1]), apply=apply)


def check_feature_source(fd_config) -> None:
    """Raises a one-line error naming `config.gan.fd.path` (and quoting `fd.train_command`, if set) when
    the files of the feature network are not there: checked before training, since the network is first
    used by the first evaluation."""
    if fd_config.network not in frechet.NETWORKS:
        raise ValueError(f"config.gan.fd.network={fd_config.network!r}: expected one of {frechet.NETWORKS}")
    command = fd_config.get("train_command", "")
    hint = f"; make it with: {command}" if command else ""
    path = fd_config.path
    if fd_config.network == "classifier":
        if not path:
            raise ValueError(f"config.gan.fd.path is empty: set it to the workdir of a classifier run{hint}")
        if not (os.path.exists(os.path.join(path, "config.json")) and os.path.isdir(os.path.join(path, "checkpoints"))):
            raise FileNotFoundError(f"config.gan.fd.path={path!r}: no config.json and checkpoints/ there; expected "
                                    f"the workdir of a classification run{hint}")
    elif not path or not os.path.isfile(path):
        raise FileNotFoundError(f"config.gan.fd.path={path!r}: no such InceptionV3 weights file{hint}")


def feature_network_from_config(fd_config) -> frechet.FeatureNetwork:
    """The feature network of `config.gan.fd`."""
    check_feature_source(fd_config)
    if fd_config.network == "classifier":
        return classifier_network(fd_config.path)
    return frechet.inception_network(fd_config.path, fid_blocks=fd_config.network == "inception_v3_fid")


def restore_generator(workdir: str, step: Optional[int] = None):
    """(generator module, its EMA variables {'params': ..., other collections} as NumPy, step) of the
    checkpoint of `step` (default: the latest) of the gan run in `workdir` (its config.json names the
    generator); only the generator's EMA and its other collections are read."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: expected the workdir of a gan run")
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    if saved.get("task") != "gan":
        raise ValueError(f"{workdir} is a run of task {saved.get('task')!r}, not of 'gan'")
    generator_config = models.config(saved["gan"]["generator"]["name"])
    generator_config.update(saved["gan"]["generator"])
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    with ocp.CheckpointManager(directory, item_names=("state",),
                               item_handlers={"state": ocp.PyTreeCheckpointHandler()}) as manager:
        step = manager.latest_step() if step is None else step
        if step is None or step not in manager.all_steps():
            raise FileNotFoundError(f"no checkpoint{'' if step is None else f' of step {step}'} in {directory} "
                                    f"(steps: {list(manager.all_steps())})")
        tree = manager.item_metadata(step)["state"].tree
        item = {"generator_ema": tree["generator_ema"], "generator_state": tree.get("generator_state") or {}}
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=item, restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item),
            partial_restore=True)))["state"]
    variables = {"params": restored["generator_ema"], **(restored.get("generator_state") or {})}
    return models.build(generator_config), variables, step


@flax.struct.dataclass
class GanState:
    step: jax.Array
    generator_params: Any
    generator_state: Any  # other variable collections ({'batch_stats': ...} or {})
    discriminator_params: Any
    discriminator_state: Any
    generator_opt_state: Any
    discriminator_opt_state: Any
    generator_ema: Any  # exponential moving average of generator_params


def _split_variables(variables) -> tuple:
    variables = dict(variables)
    variables.pop("intermediates", None)
    return variables.pop("params"), variables


def _apply(module, params, state: dict, inputs, train: bool):
    """(outputs, new state): the module on `inputs`, its other collections updated when training."""
    variables = {"params": params, **state}
    if train and state:
        return module.apply(variables, inputs, train=True, mutable=list(state))
    return module.apply(variables, inputs, train=train), state


def eval_latents(images, seed: int, latent_dim: int) -> jax.Array:
    """The latents `[batch, latent_dim]` that evaluation pairs with a batch of real images `[batch, ...]`:
    N(0, I) from key `seed` folded with the bits of the float32 sum of the batch's pixels."""
    fingerprint = jax.lax.bitcast_convert_type(jnp.sum(images.astype(jnp.float32)), jnp.uint32)
    return jax.random.normal(jax.random.fold_in(jax.random.key(seed), fingerprint), (images.shape[0], latent_dim),
                             jnp.float32)


class FrechetAccumulator(base.EvalAccumulator):
    """Streams the real and generated features of the unmasked examples into float64 statistics."""

    def __init__(self, dim: int):
        self.real = frechet.RunningStatistics(dim)
        self.generated = frechet.RunningStatistics(dim)

    def add(self, outputs) -> None:
        keep = np.asarray(outputs["mask"]) > 0
        self.real.add(np.asarray(outputs["real"])[keep])
        self.generated.add(np.asarray(outputs["generated"])[keep])

    def result(self) -> base.Metrics:
        return {"fd": frechet.frechet_distance(self.real.mean(), self.real.covariance(), self.generated.mean(),
                                               self.generated.covariance()),
                "fd_examples": self.real.count}


def _output_shape(module, input_shape) -> tuple:
    """Shape of one output of `module` on one input of `input_shape` (traced, nothing computed)."""
    inputs = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
    return tuple(jax.eval_shape(lambda x: module.init_with_output(jax.random.key(0), x)[0], inputs).shape[1:])


@base.register("gan")
class GanTask(base.Task):
    """Module docstring. `feature_network` replaces the one of `config.gan.fd` (built on first use)."""

    optimizer_state_fields = ("generator_opt_state", "discriminator_opt_state")

    default_config = staticmethod(default_config)

    def __init__(self, config, info, total_steps: int, feature_network: Optional[frechet.FeatureNetwork] = None):
        super().__init__(config, info, total_steps)
        gan = config.gan
        self.generator = models.build(gan.generator)
        self.discriminator = models.build(gan.discriminator)
        self.latent_dim = self.generator.latent_dim
        self.generator_tx, self.generator_schedule = optimizer.make_optimizer(gan.generator_optimizer, total_steps)
        self.discriminator_tx, self.discriminator_schedule = optimizer.make_optimizer(
            gan.discriminator_optimizer, total_steps * gan.discriminator_steps)
        self._feature_network = feature_network
        if feature_network is None:
            check_feature_source(gan.fd)

    @classmethod
    def validate(cls, config) -> None:
        gan = config.gan
        if config.dataset.normalize != "minus_one_one":
            raise ValueError(f"config.dataset.normalize={config.dataset.normalize!r}: the generators' images are "
                             f"in (-1, 1); set it to 'minus_one_one'")
        if gan.discriminator_steps < 1 or config.batch_size % gan.discriminator_steps:
            raise ValueError(f"config.gan.discriminator_steps={gan.discriminator_steps}: expected 1 or more, dividing "
                             f"config.batch_size={config.batch_size}")
        if not 0.0 <= gan.ema_decay < 1.0:
            raise ValueError(f"config.gan.ema_decay={gan.ema_decay}: expected a value in [0, 1)")
        if gan.fd.network not in frechet.NETWORKS:
            raise ValueError(f"config.gan.fd.network={gan.fd.network!r}: expected one of {frechet.NETWORKS}")
        for field in ("generator_optimizer", "discriminator_optimizer"):
            optimizer.validate(gan[field], f"gan.{field}")
        generator = models.build(gan.generator)
        images = _output_shape(generator, (generator.latent_dim,))
        expected = data.example_shape(config.dataset)
        if images != tuple(expected):
            raise ValueError(f"config.gan.generator ({gan.generator.name}, variant {gan.generator.variant!r}) makes "
                             f"images {images}, but the dataset's are {tuple(expected)} (config.dataset.image_size)")
        try:
            _output_shape(models.build(gan.discriminator), expected)
        except ValueError as e:
            raise ValueError(f"config.gan.discriminator does not take {tuple(expected)} images: {e}") from e

    @property
    def feature_network(self) -> frechet.FeatureNetwork:
        if self._feature_network is None:
            self._feature_network = feature_network_from_config(self.config.gan.fd)
        return self._feature_network

    def init_state(self, rng) -> GanState:
        generator_key, discriminator_key = jax.random.split(rng)
        generator_params, generator_state = _split_variables(self.generator.init(
            {"params": generator_key}, jnp.zeros((1, self.latent_dim), jnp.float32), train=False))
        discriminator_params, discriminator_state = _split_variables(self.discriminator.init(
            {"params": discriminator_key}, jnp.zeros((1,) + tuple(self.info.image_shape), jnp.float32), train=False))
        return GanState(
            step=jnp.zeros((), jnp.int32),
            generator_params=generator_params, generator_state=generator_state,
            discriminator_params=discriminator_params, discriminator_state=discriminator_state,
            generator_opt_state=self.generator_tx.init(generator_params),
            discriminator_opt_state=self.discriminator_tx.init(discriminator_params),
            generator_ema=jax.tree.map(jnp.copy, generator_params))

    def generate(self, params, generator_state, latents, train: bool = False):
        """(images `[n, h, w, 3]` in (-1, 1), new generator state) for latents `[n, latent_dim]`."""
        return _apply(self.generator, params, generator_state, latents, train)

    def _samples(self, state: GanState, key, count: int):
        latents = jax.random.normal(key, (count, self.latent_dim), jnp.float32)
        return self.generate(state.generator_params, state.generator_state, latents, train=True)

    def train_step(self, state: GanState, batch: dict, rng):
        real = batch["image"]
        steps = self.config.gan.discriminator_steps
        if real.shape[0] % steps:
            raise ValueError(f"the batch of {real.shape[0]} images is not divisible by "
                             f"config.gan.discriminator_steps={steps}")
        share = real.shape[0] // steps
        keys = jax.random.split(rng, steps + 1)
        d_params, d_state, d_opt = state.discriminator_params, state.discriminator_state, state.discriminator_opt_state
        d_metrics = []
        for k in range(steps):
            fake = jax.lax.stop_gradient(self._samples(state, keys[k], share)[0])

            def discriminator_loss(params, real_share=real[k * share:(k + 1) * share], fake=fake):
                logits, new_state = _apply(self.discriminator, params, d_state, jnp.concatenate([real_share, fake]),
                                           train=True)
                real_logits, fake_logits = logits[:share], logits[share:]
                loss = jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))
                return loss, (new_state, jnp.mean(real_logits), jnp.mean(fake_logits))

            (loss, (d_state, real_mean, fake_mean)), grads = jax.value_and_grad(discriminator_loss, has_aux=True)(
                d_params)
            updates, d_opt = self.discriminator_tx.update(grads, d_opt, d_params)
            d_params = optax.apply_updates(d_params, updates)
            d_metrics.append(jnp.stack([loss, real_mean, fake_mean]))
        d_loss, d_real, d_fake = jnp.mean(jnp.stack(d_metrics), axis=0)

        def generator_loss(params):
            latents = jax.random.normal(keys[-1], (real.shape[0], self.latent_dim), jnp.float32)
            fake, new_state = self.generate(params, state.generator_state, latents, train=True)
            logits, _ = _apply(self.discriminator, d_params, d_state, fake, train=False)
            return -jnp.mean(logits), new_state

        (g_loss, g_state), grads = jax.value_and_grad(generator_loss, has_aux=True)(state.generator_params)
        updates, g_opt = self.generator_tx.update(grads, state.generator_opt_state, state.generator_params)
        g_params = optax.apply_updates(state.generator_params, updates)
        gan = self.config.gan
        new_state = GanState(
            step=state.step + 1,
            generator_params=g_params, generator_state=g_state,
            discriminator_params=d_params, discriminator_state=d_state,
            generator_opt_state=g_opt, discriminator_opt_state=d_opt,
            generator_ema=base.ema_update(state.generator_ema, g_params, state.step, gan.ema_decay,
                                          gan.ema_dynamic_decay))
        metrics = {
            "train/loss": d_loss,  # the discriminator's hinge loss: 2 at chance, 0 when it separates perfectly
            "train/d_loss": d_loss, "train/g_loss": g_loss, "train/d_real": d_real, "train/d_fake": d_fake,
            "train/g_learning_rate": self.generator_schedule(state.step),
            "train/d_learning_rate": self.discriminator_schedule(state.step * steps),
        }
        return new_state, metrics

    def eval_step(self, state: GanState, batch: dict):
        images = batch["image"]
        latents = eval_latents(images, self.config.gan.fd.seed, self.latent_dim)
        generated, _ = self.generate(state.generator_ema, state.generator_state, latents)
        features = self.feature_network.apply
        return {"real": features(images), "generated": features(generated), "mask": batch["mask"]}

    def eval_accumulator(self) -> FrechetAccumulator:
        return FrechetAccumulator(self.feature_network.dim)

    def features(self, variables: dict, images):
        raise NotImplementedError("task 'gan' has no features for few-shot evaluation: leave config.fewshot off "
                                  "for GAN runs")

    def report(self, abstract_state) -> base.Metrics:
        return {"model/generator_params": flops.count_params(abstract_state.generator_params),
                "model/discriminator_params": flops.count_params(abstract_state.discriminator_params)}
