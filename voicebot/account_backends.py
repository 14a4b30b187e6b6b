"""Which account store a gateway uses: the settings choose between the SQLite file on this
gateway (voicebot.accounts.AgentStore) and the Redis every gateway shares
(voicebot.redis_accounts.RedisAgentStore)."""

from __future__ import annotations

from voicebot.accounts import AccountStore, AgentStore, agents_path
from voicebot.config import Settings
from voicebot.redis_accounts import RedisAgentStore


def open_account_store(settings: Settings) -> AccountStore:
    """Redis with `queue_backend: redis` (one set of agents for every gateway on that Redis),
    else the SQLite file data_dir/agents.db."""
    if settings.queue_backend == "redis":
        return RedisAgentStore(settings.redis_url)
    return AgentStore(agents_path(settings))
