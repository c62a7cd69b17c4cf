"""``demo``: record a realistic bench session so a new user sees the store at work."""

from __future__ import annotations

import os
import random
import uuid

import click

from .base import CliState, cli, pass_state

__all__ = ["demo"]

# A GlobalPlatform card-content-management exchange over the admin channel.
_EXCHANGE = [
    ("00A4040008A000000151000000", "SELECT ISD", "6F108408A000000151000000A5049F6501FF9000",
     4.1),
    ("8050000008B1C2D3E4F5A6B7C800", "INITIALIZE UPDATE",
     "00000000000000000000FF02000C11223344556677889900AABBCCDD9000", 18.7),
    ("8482010010A1B2C3D4E5F60718293A4B5C6D7E8F90", "EXTERNAL AUTHENTICATE", "9000", 9.3),
    ("80F24000024F00", "GET STATUS (ISD)", "08A000000151000000019E9000", 6.2),
    ("80F21000024F00", "GET STATUS (load files)", "6A88", 3.9),
    ("80E602001507A0000000871002000000000000", "INSTALL [for load]", "009000", 11.4),
    ("0070000001", "MANAGE CHANNEL (open)", "019000", 2.2),
    ("01A4040007A0000000871002", "SELECT USIM ADF (channel 1)", "611C", 7.5),
    ("01C000001C", "GET RESPONSE (channel 1)",
     "621A8202782183027FF08410A0000000871002FF33FF01890000008A01059000", 3.1),
    ("01B0000008", "READ BINARY (channel 1)", "98101432547698109000", 5.4),
    ("00A4040007A0000000871002", "SELECT USIM ADF", "6A82", 2.8),
    ("0070800100", "MANAGE CHANNEL (close 1)", "9000", 1.9),
]

@cli.command()
@click.option("--device-id", default="RF8M33DEMO01", show_default=True)
@click.option("--iccid", default="89014103211118510720", show_default=True)
@pass_state
@click.pass_context
def demo(ctx, state: CliState, device_id: str, iccid: str):
    """Record a demo bench session (device, card, OTA session, APDUs, test run).

    Example:

    \b
        cardlink-db demo
        cardlink-db --database sqlite:///try.db demo
    """
    from .. import migrations
    from ..counters import next_counter
    from ..fields import utc_now
    from ..models import CardProfile, CardType, DeviceType
    from ..recording import record_session
    from ..unit_of_work import UnitOfWork
    from .demo_history import SUITE, newest_outcomes, record_history, record_run

    manager = state.manager(check_schema=False, create=True)
    if migrations.get_current_revision(manager=manager) is None:
        manager.create_tables()
    else:
        migrations.run_migrations(manager=manager)
    has_key = any(os.environ.get(v) for v in (
        "CARDLINK_ENCRYPTION_KEY", "CARDLINK_ENCRYPTION_KEYS", "CARDLINK_ENCRYPTION_KEY_FILE"))

    with UnitOfWork(manager) as uow:
        uow.devices.register(device_id, device_type=DeviceType.PHONE, name="Bench phone 1",
                             manufacturer="Samsung", model="Galaxy S21",
                             firmware_version="Android 14", imei="356938035643809",
                             iccid=iccid, connection_settings={"adb_serial": device_id})
        if not uow.cards.exists(iccid):
            card = CardProfile(
                iccid=iccid, imsi="310410123456789", card_type=CardType.USIM,
                atr="3B9F96801FC78031A073BE21136743200718000001A5",
                psk_identity="demo_card_001", admin_url="https://ota.lab.local:8443/admin",
                trigger_config={"sms": {"tar": "000001", "kic": "01", "kid": "01"}},
                bip_config={"bearer": "GPRS", "apn": "internet", "buffer_size": 1024},
                security_domains={"isd_aid": "A000000151000000"},
            )
            if has_key:
                uow.cards.create_with_psk(card, os.urandom(16))
            else:
                uow.cards.create(card)

    # A push SMS (SCP80, with the next replay counter) opens the SCP81 PSK-TLS session.
    counter = next_counter(iccid, "kic=01,kid=01", "000001", manager=manager)
    with record_session(manager, device_id=device_id, card_iccid=iccid,
                        session_type="profile_download", trigger="push-sms") as session:
        session.set_scp80(tar="000001", spi="1221", kic="01", kid="01", counter=counter)
        session.set_por("por-ok")
        session.set_tls_info("TLS_PSK_WITH_AES_128_CBC_SHA256", "demo_card_001",
                             version="TLSv1.2", handshake_ms=38.4)
        session.set_admin_status("ok")
        for command, decoded, response, latency in _EXCHANGE:
            session.command(command, decoded)
            session.response(response, latency_ms=latency)

    record_history(manager, device_id, iccid, utc_now())
    run_id = f"demo-{uuid.uuid4().hex[:8]}"
    with UnitOfWork(manager) as uow:
        record_run(uow, run_id, device_id, iccid, utc_now(), newest_outcomes(),
                   random.Random(run_id))
        summary = uow.tests.get_run_summary(run_id)

    click.echo(f"Recorded OTA session {session.session_id} with {len(_EXCHANGE) * 2} APDUs "
               f"on {device_id} / card {iccid}")
    click.echo(f"Recorded test run {run_id}: {summary['passed']} passed, "
               f"{summary['failed']} failed, {summary['error']} error, "
               f"{summary['skipped']} skipped, after a week of earlier runs and sessions "
               f"(suite {SUITE})")
    if not has_key:
        click.echo("(no CARDLINK_ENCRYPTION_KEY set: the demo card was stored without a PSK; "
                   "see `cardlink-db keys generate`)")
    click.echo(f"Try: cardlink-db logs show {session.session_id}")
    click.echo("     cardlink-db stats")
    click.echo("     cardlink-db report -o report.html")
    click.echo("")
    from .schema import status

    ctx.invoke(status, detail=True, as_json=False)
