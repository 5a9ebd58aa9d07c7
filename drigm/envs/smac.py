"""``smac:MAP``: oxwhirl's SMAC (``smac.env.StarCraft2Env``, real StarCraft II) as a MultiAgentEnv.

SMAC and the StarCraft II binary are not dependencies of this project: they are imported when an
environment is built, and a missing package, binary or map raises :class:`EnvError` saying how to
install it. Install real SMAC from its repository, ``pip install git+https://github.com/oxwhirl/smac.git``;
the PyPI package named ``smac`` is SMAC3, an unrelated hyperparameter optimiser.

The one perturbation, ``enemy_pos_noise_std`` (sigma >= 0), adds N(0, sigma^2) noise to the observed
relative x and y of every visible enemy, as the SMAX adapter does; because SMAC's enemy block also holds
the enemy's distance (derived from that position), the distance feature is recomputed from the noisy
offsets so the observation stays self-consistent.

What was verified and what was assumed (no StarCraft II here):

* Verified by reading SMAC's source (smac/env/starcraft2/starcraft2.py): an agent's observation is
  ``[move feats | enemy feats (n_enemies x nf) | ally feats | own feats (| timestep)]`` with
  ``get_obs_move_feats_size()`` move features and ``get_obs_enemy_feats_size() == (n_enemies, nf)``;
  each enemy block starts ``[available-to-attack, distance / sight, dx / sight, dy / sight, ...]`` and
  is all zeros when that enemy is dead or out of sight. ``step`` returns ``(reward, terminated, info)``
  with ``info["battle_won"]``; at the episode limit it returns ``terminated=True`` without a win.
  Action 0 is the no-op of dead agents, 1 is stop. These sizes are computed from the map parameters
  without launching the game, so the adapter reads them at construction.
* Verified here only against a stand-in of that interface (tests/test_envs_starcraft.py): the noise
  indices, the truncation rule and the availability checks.
* Assumed: that the installed SMAC matches that source; that StarCraft II lives at ``$SC2PATH`` or
  pysc2's default (Linux ``~/StarCraftII``, macOS ``/Applications/StarCraft II``, Windows
  ``C:/Program Files (x86)/StarCraft II``) with SMAC's maps under ``Maps/SMAC_Maps``.

Seeding: the StarCraft II game takes its seed when launched (``smac_kwargs={"seed": ...}``) and SMAC
restarts episodes inside one game, so ``reset(seed)`` seeds this adapter's noise draws only; StarCraft II
itself does not replay an episode exactly.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from drigm.envs.base import EnvError, MultiAgentEnv, TimeStep

INSTALL_HINT = (
    "install oxwhirl's SMAC from its repository: pip install git+https://github.com/oxwhirl/smac.git "
    "(NOT 'pip install smac': that PyPI package is SMAC3, an unrelated hyperparameter optimiser), then install "
    "StarCraft II (Linux: https://github.com/Blizzard/s2client-proto#downloads, unzipped to ~/StarCraftII or to "
    "$SC2PATH) and SMAC's maps into $SC2PATH/Maps/SMAC_Maps (https://github.com/oxwhirl/smac#smac-maps)"
)


def default_sc2_path() -> Path:
    """Where pysc2 looks for StarCraft II: $SC2PATH, else the platform's default install directory."""
    env = os.environ.get("SC2PATH")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path("/Applications/StarCraft II")
    if sys.platform.startswith("win"):
        return Path("C:/Program Files (x86)/StarCraft II")
    return Path("~/StarCraftII").expanduser()


def import_starcraft2env() -> type:
    """oxwhirl's ``smac.env.StarCraft2Env``, or EnvError naming what is missing and how to install it."""
    try:
        module = importlib.import_module("smac.env")
    except ImportError as exc:
        top = sys.modules.get("smac")
        if top is not None and not hasattr(top, "env"):
            raise EnvError(
                f"the installed package 'smac' ({getattr(top, '__file__', '?')}) is not oxwhirl's SMAC (it has no "
                f"smac.env; PyPI's 'smac' is SMAC3, a hyperparameter optimiser): pip uninstall smac, then "
                f"{INSTALL_HINT}"
            ) from exc
        raise EnvError(
            f"the 'smac' environment needs oxwhirl's SMAC, which is not importable ({exc}); {INSTALL_HINT}"
        ) from exc
    cls = getattr(module, "StarCraft2Env", None)
    if cls is None:
        raise EnvError(f"smac.env has no StarCraft2Env; {INSTALL_HINT}")
    return cls


def check_starcraft2(map_name: str) -> Path:
    """The StarCraft II directory holding SMAC's `map_name`, or EnvError saying which part is missing."""
    path = default_sc2_path()
    if not (path / "Versions").is_dir():
        raise EnvError(
            f"StarCraft II was not found at {path} (no 'Versions' directory; set SC2PATH to the install directory); "
            f"{INSTALL_HINT}"
        )
    map_file = path / "Maps" / "SMAC_Maps" / f"{map_name}.SC2Map"
    if not map_file.is_file():
        raise EnvError(f"SMAC map file {map_file} is missing; {INSTALL_HINT}")
    return path


def smac_unavailable_reason(map_name: str = "3s_vs_5z") -> str | None:
    """Why a real SMAC environment cannot run here (package, binary or map), or None when it can."""
    try:
        import_starcraft2env()
        check_starcraft2(map_name)
    except EnvError as exc:
        return str(exc)
    return None


class SMACEnv(MultiAgentEnv):
    """oxwhirl's StarCraft2Env as a MultiAgentEnv; info carries ``won`` (SMAC's battle_won) at every step."""

    def __init__(
        self,
        map_name: str,
        episode_limit: int | None = None,
        enemy_pos_noise_std: float = 0.0,
        smac_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not map_name:
            raise EnvError("'smac' needs a map: 'smac:MAP', e.g. 'smac:3s_vs_5z'")
        sigma = enemy_pos_noise_std
        if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not math.isfinite(sigma) or sigma < 0:
            raise EnvError(f"enemy_pos_noise_std={sigma!r} must be a finite number >= 0")
        kwargs = dict(smac_kwargs or {})
        if "map_name" in kwargs:
            raise EnvError("give the map in the spec ('smac:MAP'), not in smac_kwargs")
        cls = import_starcraft2env()
        check_starcraft2(map_name)
        try:
            self._env = cls(map_name=map_name, **kwargs)
        except (KeyError, TypeError, ValueError) as exc:
            raise EnvError(f"SMAC rejected map {map_name!r} or smac_kwargs {kwargs}: {exc!r}") from exc
        if episode_limit is not None:
            if isinstance(episode_limit, bool) or not isinstance(episode_limit, int) or episode_limit < 1:
                raise EnvError(f"episode_limit={episode_limit!r} must be an integer >= 1")
            self._env.episode_limit = int(episode_limit)  # StarCraft2Env.step compares its step count to this
        self.map_name = map_name
        self.enemy_pos_noise_std = float(sigma)
        move = int(self._env.get_obs_move_feats_size())
        n_en, nf = self._env.get_obs_enemy_feats_size()
        blocks = move + nf * np.arange(int(n_en))
        self._enemy_dist_idx = blocks + 1
        self._enemy_pos_idx = np.stack([blocks + 2, blocks + 3], axis=1)
        self._enemy_block = (move, int(n_en), int(nf))
        self._rng = np.random.default_rng()
        self._avail: np.ndarray | None = None
        self._t = 0
        self._done = True

    @property
    def n_agents(self) -> int:
        return int(self._env.n_agents)

    @property
    def n_enemies(self) -> int:
        """Enemy units of the map."""
        return int(self._env.n_enemies)

    @property
    def n_actions(self) -> int:
        return int(self._env.get_total_actions())

    @property
    def obs_dim(self) -> int:
        return int(self._env.get_obs_size())

    @property
    def state_dim(self) -> int:
        return int(self._env.get_state_size())

    @property
    def episode_limit(self) -> int:
        return int(self._env.episode_limit)

    @property
    def enemy_position_indices(self) -> np.ndarray:
        """(n_enemies, 2) indices of enemy k's relative (x, y) in an agent's observation vector."""
        return self._enemy_pos_idx.copy()

    def perturb_obs(self, obs: np.ndarray) -> np.ndarray:
        """`obs` (n_agents, obs_dim) with enemy-position noise on visible enemies and distances recomputed."""
        if self.enemy_pos_noise_std == 0.0:
            return obs
        move, n_en, nf = self._enemy_block
        enemy = obs[:, move : move + n_en * nf].reshape(obs.shape[0], n_en, nf)
        visible = np.any(enemy != 0, axis=-1)
        noise = self._rng.normal(0.0, self.enemy_pos_noise_std, size=(obs.shape[0], n_en, 2)) * visible[..., None]
        out = obs.copy()
        pos = enemy[..., 2:4] + noise
        out[:, self._enemy_pos_idx] = pos
        out[:, self._enemy_dist_idx] = np.where(visible, np.hypot(pos[..., 0], pos[..., 1]), 0.0)
        return out.astype(np.float32)

    def _timestep(self, reward: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> TimeStep:
        obs = self.perturb_obs(np.asarray(self._env.get_obs(), dtype=np.float32))
        self._avail = np.asarray(self._env.get_avail_actions()).astype(bool)
        return TimeStep(
            obs=obs,
            state=np.asarray(self._env.get_state(), dtype=np.float32),
            avail_actions=self._avail.copy(),
            reward=float(reward),
            terminated=terminated,
            truncated=truncated,
            info=info,
        )

    def reset(self, seed: int | None = None) -> TimeStep:
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
                raise EnvError(f"seed={seed!r} must be an integer >= 0")
            self._rng = np.random.default_rng(int(seed))
        self._env.reset()
        self._t, self._done = 0, False
        return self._timestep(0.0, False, False, {"won": False})

    def _battle_over(self, info: dict[str, Any]) -> bool:
        if "dead_allies" in info and "dead_enemies" in info:
            return info["dead_allies"] >= self.n_agents or info["dead_enemies"] >= self.n_enemies
        allies = getattr(self._env, "agents", {}).values()
        enemies = getattr(self._env, "enemies", {}).values()
        return all(u.health == 0 for u in allies) or all(u.health == 0 for u in enemies)

    def step(self, actions: np.ndarray) -> TimeStep:
        if self._done or self._avail is None:
            raise EnvError("step() called before reset() or after the episode ended; call reset()")
        a = self.check_actions(actions, self._avail)
        reward, smac_done, smac_info = self._env.step(a.tolist())
        self._t += 1
        info = dict(smac_info)
        won = bool(info.get("battle_won", False))
        info["won"] = won
        terminated, truncated = bool(smac_done), False
        if not smac_info:  # SMAC lost its connection to StarCraft II, restarted it, and cut the episode
            terminated, truncated = False, True
            info["sc2_restarted"] = True
        elif smac_done and not won and self._t >= self.episode_limit and not self._battle_over(info):
            terminated, truncated = False, True  # the time limit, not the battle, ended the episode
        elif not smac_done and self._t >= self.episode_limit:
            truncated = True
        self._done = terminated or truncated
        return self._timestep(reward, terminated, truncated, info)

    def close(self) -> None:
        self._env.close()


def make_smac_env(
    arg: str | None,
    episode_limit: int | None = None,
    enemy_pos_noise_std: float = 0.0,
    smac_kwargs: dict[str, Any] | None = None,
    **unknown: Any,
) -> SMACEnv:
    """Registry factory for ``smac:MAP`` (real StarCraft II); EnvError with install steps when it is absent."""
    if unknown:
        raise EnvError(
            f"unknown smac argument(s) {sorted(unknown)}; arguments: episode_limit, enemy_pos_noise_std, smac_kwargs "
            "(StarCraft2Env's own options go in smac_kwargs)"
        )
    return SMACEnv(
        arg or "", episode_limit=episode_limit, enemy_pos_noise_std=enemy_pos_noise_std, smac_kwargs=smac_kwargs
    )
