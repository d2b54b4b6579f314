"""Writes tests/fixtures/inception_v3_io.npz: torchvision's InceptionV3 (no download: weights drawn by
`random_weights` from a seed, which tests/test_inception.py draws again without torch) on two random
64x64 images resized to 75x75, with torchvision's blocks and with FID's.

  /work/timm-venv/bin/python experiments/make_inception_fixture.py     (torch and torchvision, not our venv)

The FID blocks are written here from their description (the TensorFlow graph of FID as pytorch-fid
rebuilds it): the pool branches of Mixed_5b-5d (InceptionA), 6b-6e (InceptionC) and 7b (InceptionE)
average without counting the padding, and Mixed_7c's pool branch takes a 3x3 max. At 75x75 the last
blocks see 3x3 and 1x1 grids, where those pools differ most from torchvision's.
"""

import json
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "inception_v3_io.npz")
SIZE = 75
SEED = 0
IGNORED = ("fc.", "AuxLogits.")


def random_weights(shapes: dict) -> dict:
    """{name: float32 array} for torchvision state_dict names and shapes, drawn in sorted name order:
    conv kernels He-normal, BatchNorm scale U(0.5, 1.5), bias and running mean N(0, 0.1^2), running
    variance U(0.5, 1.5), so that activations keep their scale through the 94 convolutions."""
    rng = np.random.default_rng(SEED)
    weights = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        if name.endswith("conv.weight"):
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif name.endswith(("bn.weight", "running_var")):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("bn.bias", "running_mean")):
            value = rng.standard_normal(shape) * 0.1
        else:
            raise ValueError(f"random_weights: no rule for {name!r}")
        weights[name] = value.astype(np.float32)
    return weights


def fid_model(torch, inception):
    """torchvision's Inception3 with the FID blocks (module docstring)."""
    F = torch.nn.functional

    def pool(x, kind):
        if kind == "max":
            return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    class FidA(inception.InceptionA):
        def _forward(self, x):
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return [self.branch1x1(x), b5, b3, self.branch_pool(pool(x, "avg"))]

    class FidC(inception.InceptionC):
        def _forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            d = x
            for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                          self.branch7x7dbl_5):
                d = layer(d)
            return [self.branch1x1(x), b7, d, self.branch_pool(pool(x, "avg"))]

    def make_e(kind):
        class FidE(inception.InceptionE):
            def _forward(self, x):
                b3 = self.branch3x3_1(x)
                b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
                d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
                d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
                return [self.branch1x1(x), b3, d, self.branch_pool(pool(x, kind))]
        return FidE

    model = inception.Inception3(aux_logits=False, init_weights=False, transform_input=False,
                                 inception_blocks=[inception.BasicConv2d, FidA, inception.InceptionB, FidC,
                                                   inception.InceptionD, make_e("avg"), inception.InceptionAux])
    model.Mixed_7c = make_e("max")(2048)
    return model


def main():
    import torch  # pylint: disable=g-import-not-at-top
    from torchvision.models import inception  # pylint: disable=g-import-not-at-top

    standard = inception.Inception3(aux_logits=False, init_weights=False, transform_input=False)
    shapes = {k: list(v.shape) for k, v in standard.state_dict().items()
              if not k.startswith(IGNORED) and not k.endswith("num_batches_tracked")}
    weights = {k: torch.from_numpy(v) for k, v in random_weights(shapes).items()}
    images = np.random.default_rng(1).uniform(-1.0, 1.0, (2, 64, 64, 3)).astype(np.float32)
    outputs = {}
    for name, model in (("standard", standard), ("fid", fid_model(torch, inception))):
        missing, unexpected = model.load_state_dict(weights, strict=False)
        assert not unexpected and all(k.startswith(IGNORED) or k.endswith("num_batches_tracked") for k in missing)
        model.fc = torch.nn.Identity()
        model.eval()
        with torch.no_grad():
            x = torch.nn.functional.interpolate(torch.from_numpy(images).permute(0, 3, 1, 2), size=(SIZE, SIZE),
                                                mode="bilinear", align_corners=False)
            outputs[name] = model(x).numpy()
    np.savez(FIXTURE, images=images, features_standard=outputs["standard"], features_fid=outputs["fid"],
             shapes=np.array(json.dumps(shapes)), size=np.array(SIZE))
    print(f"wrote {FIXTURE}: features {outputs['standard'].shape}, standard vs FID blocks differ by up to "
          f"{np.abs(outputs['standard'] - outputs['fid']).max():.3g} (feature scale {np.abs(outputs['fid']).mean():.3g})")


if __name__ == "__main__":
    main()
