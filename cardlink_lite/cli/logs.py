"""``logs show``: a session's APDU trace, readable or as JSON."""

from __future__ import annotations

import uuid

import click

from ..status_words import describe_status_word
from ..unit_of_work import UnitOfWork
from . import CliState, cli, echo_json, json_option, pass_state


@cli.group()
def logs():
    """Read the APDU command/response logs of OTA sessions.

    Example:

    \b
        cardlink-db logs show 3f2c9a1e-8b7d-4c1a-9e2f-0a1b2c3d4e5f --errors
    """


@logs.command()
@click.argument("session_id")
@click.option("--errors", "errors_only", is_flag=True,
              help="Only responses whose status word is not 9000.")
@json_option
@pass_state
def show(state: CliState, session_id, errors_only, as_json):
    """Print a session's trace: time, direction, hex, decoded text, status word, latency.

    Example:

    \b
        cardlink-db logs show 3f2c9a1e-8b7d-4c1a-9e2f-0a1b2c3d4e5f
        cardlink-db logs show 3f2c9a1e-8b7d-4c1a-9e2f-0a1b2c3d4e5f --errors --json
    """
    try:
        session_id = str(uuid.UUID(session_id))
    except ValueError:
        raise click.BadParameter(
            f"{session_id!r} is not a session id; session ids are UUIDs like "
            "3f2c9a1e-8b7d-4c1a-9e2f-0a1b2c3d4e5f", param_hint="SESSION_ID") from None
    manager = state.manager()
    with UnitOfWork(manager) as uow:
        if not uow.sessions.exists(session_id):
            raise click.ClickException(
                f"session {session_id} not found in {manager.config.safe_url}; check the id "
                "and the --database URL"
            )
        if errors_only:
            rows = uow.logs.find_errors(session_id)
        else:
            rows = uow.logs.session_query(session_id).iterator()
        if as_json:
            echo_json([_as_dict(r) for r in rows])
            return
        count = 0
        for row in rows:
            click.echo(_line(row))
            count += 1
        if not count:
            click.echo("No errors in this session." if errors_only else "No logs in this session.")


def _as_dict(row) -> dict:
    return {
        "id": row.id,
        "timestamp": row.timestamp,
        "direction": row.direction.value,
        "raw_data": row.raw_data,
        "decoded_data": row.decoded_data,
        "status_word": row.status_word,
        "status_message": row.status_message,
        "status_meaning": describe_status_word(row.status_word) if row.status_word else None,
        "latency_ms": row.latency_ms,
    }


def _line(row) -> str:
    arrow = ">>" if row.direction.value == "command" else "<<"
    parts = [row.timestamp.strftime("%H:%M:%S.%f")[:-3], arrow, row.raw_data]
    if row.decoded_data:
        parts.append(f"[{row.decoded_data}]")
    if row.status_word:
        parts.append(f"SW={row.status_word} ({describe_status_word(row.status_word)})")
    if row.latency_ms is not None:
        parts.append(f"{row.latency_ms:.1f} ms")
    return "  ".join(parts)


__all__ = ["logs", "show"]
