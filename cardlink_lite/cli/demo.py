"""``demo``: record a realistic bench session so a new user sees the store at work."""

from __future__ import annotations

import click

from .base import CliState, StoredText, cli, echo, pass_state

__all__ = ["demo"]


@cli.command()
@click.option("--device-id", default="RF8M33DEMO01", show_default=True,
              type=StoredText("Device.id"))
@click.option("--iccid", default="89014103211118510720", show_default=True,
              type=StoredText("CardProfile.iccid"))
@pass_state
@click.pass_context
def demo(ctx, state: CliState, device_id: str, iccid: str):
    """Record a demo bench session (device, card, OTA session, APDUs, test run).

    Example:

    \b
        cardlink-db demo
        cardlink-db --database sqlite:///try.db demo
    """
    from .demo_data import SUITE, record_demo
    from .schema import status

    done = record_demo(state.manager(check_schema=False, create=True), device_id, iccid)
    summary = done["summary"]
    echo(f"Recorded OTA session {done['session_id']} with {done['apdus']} APDUs "
         f"on {device_id} / card {iccid}")
    echo(f"Recorded test run {done['run_id']}: {summary['passed']} passed, "
         f"{summary['failed']} failed, {summary['error']} error, "
         f"{summary['skipped']} skipped, after a week of earlier runs and sessions "
         f"(suite {SUITE})")
    if not done["has_key"]:
        echo("(no CARDLINK_ENCRYPTION_KEY set: the demo card was stored without a PSK; "
             "see `cardlink-db keys generate`)")
    echo(f"Try: cardlink-db logs show {done['session_id']}")
    echo("     cardlink-db stats")
    echo("     cardlink-db report -o report.html")
    echo("")
    ctx.invoke(status, detail=True, as_json=False)
