"""GAN losses and regularisers (spec §8): non-saturating logistic, logistic, hinge, WGAN; lazy R1; PL.

Beyond the seed: the relativistic pairing loss (RpGAN, R3GAN, Huang et al. NeurIPS 2024), where each fake
is scored against the real it is paired with, and R2, the R1 penalty taken on fakes.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as Fn

from training.networks import Discriminator, Generator
from training.run_config import LossConfig

class GANLoss:
    """Computes each training phase's loss; the caller owns backward, accumulation and optimisers."""

    def __init__(self, G: Generator, D: Discriminator, cfg: LossConfig,
                 autocast: Callable[[], "torch.autocast"] = lambda: torch.autocast("cpu", enabled=False),
                 augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, ada=None):
        self.G, self.D, self.cfg, self.autocast = G, D, cfg, autocast
        self.augment, self.ada = augment, ada       # ADA: every image D sees is augmented; D(reals) sets p
        self.pl_mean = torch.zeros([])

    # -- generator ------------------------------------------------------------------------------------

    def generate(self, z: torch.Tensor, c: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Fakes and their ws, with the generator's style / component mixing and component dropout."""
        with self.autocast():
            img, ws, _ = self.G.generate(z, c, style_mixing=self.cfg.style_mixing,
                                         component_mixing=self.cfg.component_mixing)
        return img, ws

    def discriminate(self, img: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        if self.augment is not None:        # reals, fakes and the R1 reals (its gradient goes through it)
            img = self.augment(img)
        with self.autocast():
            return self.D(img, c).float()

    def g_main(self, z: torch.Tensor, c: Optional[torch.Tensor],
               real: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
        """`real` (paired with the fakes one to one) is needed by rpgan only."""
        img, _ = self.generate(z, c)
        logits = self.discriminate(img, c)
        kind = self.cfg.g_loss
        if kind == "rpgan":
            if real is None or real.shape[0] != img.shape[0]:
                raise ValueError("the rpgan generator loss needs one real per fake")
            with torch.no_grad():
                real_logits = self.discriminate(real, c)
            loss = Fn.softplus(real_logits - logits)        # softplus(-(D(fake) - D(real)))
        elif kind == "logistic_ns":
            loss = Fn.softplus(-logits)
        elif kind == "logistic":
            loss = -Fn.softplus(logits)
        else:  # hinge and wgan: maximise the fake score
            loss = -logits
        return loss.mean(), {"Loss/scores/fake": logits.detach().mean(), "Loss/G/loss": loss.detach().mean()}

    def g_pl(self, z: torch.Tensor, c: Optional[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """Path-length regulariser: Jacobian norm of the image w.r.t. each per-layer w (StyleGAN2 eq. 4)."""
        cfg = self.cfg
        B = max(1, z.shape[0] // cfg.pl_batch_shrink)
        img, ws = self.generate(z[:B], c[:B] if c is not None else None)
        noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grad.square().sum(dim=3).mean(dim=(1, 2)).sqrt()       # [B]: over d, components, layers
        self.pl_mean = self.pl_mean.to(lengths.device).lerp(lengths.detach().mean(), cfg.pl_decay)
        penalty = (lengths - self.pl_mean).square()
        return (penalty * cfg.pl_weight).mean(), {"Loss/pl_penalty": penalty.detach().mean()}

    # -- discriminator --------------------------------------------------------------------------------

    def d_main(self, real: torch.Tensor, c: Optional[torch.Tensor], z: torch.Tensor) -> tuple[torch.Tensor, dict]:
        with torch.no_grad():
            fake, _ = self.generate(z, c)
        fake_logits = self.discriminate(fake, c)
        real_logits = self.discriminate(real, c)
        if self.ada is not None:
            self.ada.observe(real_logits)
        kind = self.cfg.d_loss
        if kind == "rpgan":
            loss = Fn.softplus(fake_logits - real_logits)   # softplus(-(D(real) - D(fake))), pair by pair
        elif kind == "logistic":
            loss = Fn.softplus(fake_logits) + Fn.softplus(-real_logits)
        elif kind == "hinge":
            loss = Fn.relu(1 + fake_logits) + Fn.relu(1 - real_logits)
        else:  # wgan with the small drift term that keeps scores near zero
            loss = fake_logits - real_logits + 0.001 * real_logits.square()
        stats = {"Loss/scores/real": real_logits.detach().mean(), "Loss/scores/fake": fake_logits.detach().mean(),
                 "Loss/signs/real": real_logits.detach().sign().mean(), "Loss/D/loss": loss.detach().mean()}
        return loss.mean(), stats

    def _grad_penalty(self, img: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        """|grad_x D(x)|^2 per image, differentiable w.r.t. D's parameters only (x is detached)."""
        img = img.detach().requires_grad_(True)
        logits = self.discriminate(img, c)
        (grad,) = torch.autograd.grad(logits.sum(), img, create_graph=True)
        return grad.float().square().sum(dim=(1, 2, 3))

    def d_r1(self, real: torch.Tensor, c: Optional[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        penalty = self._grad_penalty(real, c)
        return (penalty * (self.cfg.r1_gamma / 2)).mean(), {"Loss/r1_penalty": penalty.detach().mean()}

    def d_r2(self, c: Optional[torch.Tensor], z: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """R2: the same penalty on fakes drawn from z; the fakes are constants, so only D gets gradients."""
        with torch.no_grad():
            fake, _ = self.generate(z, c)
        penalty = self._grad_penalty(fake, c)
        return (penalty * (self.cfg.r2_weight() / 2)).mean(), {"Loss/r2_penalty": penalty.detach().mean()}

    def d_reg(self, real: torch.Tensor, c: Optional[torch.Tensor],
              z: Optional[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """The lazy D regularisation step: R1 when its weight is > 0, plus R2 when z is given."""
        total, stats = torch.zeros([], device=real.device), {}
        if self.cfg.r1_gamma > 0:
            loss, s = self.d_r1(real, c)
            total, stats = total + loss, {**stats, **s}
        if z is not None:
            loss, s = self.d_r2(c, z)
            total, stats = total + loss, {**stats, **s}
        return total, stats
