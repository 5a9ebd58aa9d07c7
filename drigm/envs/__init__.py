"""Environments: one interface (:class:`MultiAgentEnv`) and a name -> adapter registry (:func:`make_env`)."""

from drigm.envs.base import (
    ENV_ADAPTERS,
    EnvError,
    MultiAgentEnv,
    TimeStep,
    make_env,
    parse_env_spec,
    register_env,
    registered_envs,
)

__all__ = [
    "ENV_ADAPTERS",
    "EnvError",
    "MultiAgentEnv",
    "TimeStep",
    "make_env",
    "parse_env_spec",
    "register_env",
    "registered_envs",
]
