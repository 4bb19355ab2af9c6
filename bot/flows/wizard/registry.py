"""The wizard's ten steps, in order (the seed's list)."""

from __future__ import annotations

from bot.flows.wizard.steps.base import Step


def build_steps() -> list[Step]:
    from bot.flows.wizard.steps import (
        backup_type,
        pool,
        repository,
        retention,
        review,
        schedule,
        server,
        snapshot,
        source,
        validation,
    )

    return [
        server.ServerStep(),
        backup_type.BackupTypeStep(),
        source.SourceStep(),
        snapshot.SnapshotStep(),
        pool.PoolStep(),
        repository.RepositoryStep(),
        retention.RetentionStep(),
        schedule.ScheduleStep(),
        validation.ValidationStep(),
        review.ReviewStep(),
    ]
