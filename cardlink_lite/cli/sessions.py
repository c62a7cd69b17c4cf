"""``sessions list``: find OTA sessions (and their ids) by device, card, status and date."""

from __future__ import annotations

import click

from .base import (
    MAX_BIGINT,
    CliState,
    StoredText,
    UtcDateTime,
    cli,
    echo,
    echo_json,
    json_option,
    pass_state,
)

__all__ = ["list_command", "sessions_group"]

@cli.group("sessions")
def sessions_group():
    """OTA sessions: list them to find an id for `logs show`.

    Example:

    \b
        cardlink-db sessions list --status failed
    """


@sessions_group.command("list")
@click.option("--device", "device_id", type=StoredText("Device.id"), metavar="ID",
              help="Only sessions of this device.")
@click.option("--card", "card_iccid", type=StoredText("CardProfile.iccid"), metavar="ICCID",
              help="Only sessions of this card.")
@click.option("--status", metavar="STATUS",
              help="Only sessions in this status (pending, active, completed, failed, timeout).")
@click.option("--since", type=UtcDateTime(), metavar="DATE",
              help="Only sessions created at or after this UTC date or time "
                   "(2024-11-29 or 2024-11-29T08:00).")
@click.option("--limit", "-n", default=50, show_default=True,
              type=click.IntRange(min=1, max=MAX_BIGINT),
              help="Newest sessions to list.")
@json_option
@pass_state
def list_command(state: CliState, device_id, card_iccid, status, since, limit, as_json):
    """List sessions, newest first: id, date (UTC), status, type, device, card, APDU count.

    Example:

    \b
        cardlink-db sessions list
        cardlink-db sessions list --device RF8M33DEMO01 --since 2024-11-29 --json
        cardlink-db logs show $(cardlink-db sessions list -n 1 --json | jq -r '.[0].id')
    """
    from ..models import SessionStatus
    from ..session_listing import list_sessions

    if status is not None:
        try:
            status = SessionStatus(status.strip().lower())
        except ValueError:
            raise click.BadParameter(
                f"{status[:20]!r} is not a session status; use one of "
                f"{', '.join(s.value for s in SessionStatus)}", param_hint="--status") from None
    rows = list_sessions(state.manager(readonly=True), device_id=device_id, card_iccid=card_iccid,
                         status=status, since=since, limit=limit)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        echo("No sessions match.")
        return
    echo(f"{'SESSION ID':<36}  {'CREATED (UTC)':<19}  {'STATUS':<9}  {'TYPE':<18}  "
         f"{'DEVICE':<16}  {'CARD':<20}  {'APDUS':>6}")
    for row in rows:
        echo(f"{row['id']:<36}  {row['created_at']:%Y-%m-%d %H:%M:%S}  "
             f"{row['status']:<9}  {(row['session_type'] or '-')[:18]:<18}  "
             f"{(row['device_id'] or '-')[:16]:<16}  {(row['card_iccid'] or '-')[:20]:<20}  "
             f"{row['logs']:>6}")
