"""The mixers' names and typed hyperparameters, without torch: what a config or a protocol needs to check an algo.

:data:`MIXER_PARAMS` maps every registered mixer name to its ``Params`` dataclass. The built-in mixers (``vdn``,
``qmix``, ``qtran``) are listed here; :func:`drigm.mixers.register_mixer` adds a new mixer's entry and refuses a
class whose ``Params`` disagrees with the entry already here, so the two registries name the same mixers with the
same Params (a test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass


class MixerError(ValueError):
    """A mixer name or hyperparameter is invalid."""


@dataclass(frozen=True)
class NoParams:
    """A mixer without hyperparameters."""

    def validate(self) -> None:
        """Nothing to check."""


@dataclass(frozen=True)
class QMixParams:
    """QMIX sizes: mixing width, hypernetwork depth (1 or 2) and its hidden width.

    ``hypernet_gain``: when set, the weight matrices of the hypernetworks that make the mixing weights start
    Xavier-uniform with this gain (a small gain starts Q_tot near a plain sum of small terms, as the seed
    paper's building QMIX does); None keeps PyTorch's default initialisation.
    """

    embed_dim: int = 32
    hypernet_layers: int = 2
    hypernet_embed: int = 64
    hypernet_gain: float | None = None

    def validate(self) -> None:
        """Raise MixerError naming the field when a size is out of range."""
        if self.embed_dim < 1:
            raise MixerError(f"mixer.params.embed_dim={self.embed_dim} must be >= 1")
        if self.hypernet_layers not in (1, 2):
            raise MixerError(f"mixer.params.hypernet_layers={self.hypernet_layers} must be 1 or 2")
        if self.hypernet_embed < 1:
            raise MixerError(f"mixer.params.hypernet_embed={self.hypernet_embed} must be >= 1")
        if self.hypernet_gain is not None and not 0.0 < self.hypernet_gain < float("inf"):
            raise MixerError(f"mixer.params.hypernet_gain={self.hypernet_gain!r} must be a finite number > 0")


@dataclass(frozen=True)
class QTranParams:
    """QTRAN-base sizes and the weights of L_opt and L_nopt (defaults 1 and 0.1, as in the paper's code).

    On the small tabular games the learning gates use nopt_coef=1.0: with 0.1, L_nopt moves the utilities
    off an early greedy joint action too slowly for a 10k-step budget.
    """

    hidden: int = 64
    opt_coef: float = 1.0
    nopt_coef: float = 0.1

    def validate(self) -> None:
        """Raise MixerError naming the field when a value is out of range."""
        if self.hidden < 1:
            raise MixerError(f"mixer.params.hidden={self.hidden} must be >= 1")
        for key in ("opt_coef", "nopt_coef"):
            v = getattr(self, key)
            if not v >= 0.0:
                raise MixerError(f"mixer.params.{key}={v!r} must be >= 0")


MIXER_PARAMS: dict[str, type] = {"vdn": NoParams, "qmix": QMixParams, "qtran": QTranParams}
"""Mixer name -> its Params dataclass (the built-in mixers, and any added by :func:`drigm.mixers.register_mixer`)."""


def register_params(name: str, params: type) -> None:
    """Enter mixer `name` with its Params class; MixerError when `name` is listed with another Params class."""
    if name in MIXER_PARAMS and MIXER_PARAMS[name] is not params:
        raise MixerError(
            f"mixer {name!r} takes {MIXER_PARAMS[name].__name__} (drigm.mixer_params); a class with "
            f"Params={params.__name__} cannot be registered under that name"
        )
    MIXER_PARAMS[name] = params


def unregister_params(name: str) -> None:
    """Remove mixer `name`'s entry (no error when absent)."""
    MIXER_PARAMS.pop(name, None)


def mixer_params(name: str) -> type:
    """The Params dataclass of the mixer registered under `name`; MixerError naming the registered names."""
    if name not in MIXER_PARAMS:
        raise MixerError(f"unknown mixer (algo) {name!r}; registered mixers: {', '.join(sorted(MIXER_PARAMS))}")
    return MIXER_PARAMS[name]
