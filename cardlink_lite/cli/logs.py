"""``logs show``: a session's APDU trace, readable or as JSON; ``logs import``: trace files in."""

from __future__ import annotations

import os
import sys
import uuid

import click

from .base import (
    CliState,
    LazyChoice,
    StoredText,
    cli,
    echo,
    echo_json,
    json_option,
    pass_state,
    progress_bar,
)


@cli.group()
def logs():
    """Read the APDU command/response logs of OTA sessions.

    Example:

    \b
        cardlink-db logs show 3f2c9a1e-8b7d-4c1a-9e2f-0a1b2c3d4e5f --errors
        cardlink-db logs import capture.pcapng
    """


@logs.command()
@click.argument("session_id")
@click.option("--errors", "errors_only", is_flag=True,
              help="Only responses whose status word is not 9000 (61xx/9Fxx/91xx, "
                   "\"more data\", and 63Cx answering a PIN retry-counter query are not "
                   "errors).")
@json_option
@pass_state
def show(state: CliState, session_id, errors_only, as_json):
    """Print a session's trace: time, direction, hex, decoded text, status word, latency.

    Example:

    \b
        cardlink-db logs show 3f2c9a1e-8b7d-4c1a-9e2f-0a1b2c3d4e5f
        cardlink-db logs show 3f2c9a1e-8b7d-4c1a-9e2f-0a1b2c3d4e5f --errors --json
    """
    session_id = _session_uuid(session_id, "SESSION_ID")
    from ..unit_of_work import UnitOfWork

    manager = state.manager(readonly=True)
    with UnitOfWork(manager) as uow:
        session = uow.sessions.get_by_id(session_id)
        if session is None:
            raise click.ClickException(
                f"session {session_id} not found in {manager.config.safe_url}; check the id "
                "and the --database URL")
        rows = uow.logs.find_errors(session_id) if errors_only \
            else uow.logs.session_query(session_id).iterator()
        sources = _sources(session_id)
        if as_json:
            echo_json([_as_dict(r, sources) for r in rows])
            return
        for line in _session_lines(session):
            echo(line)
        for test_name, run_id in uow.tests.tests_for_session(session_id):
            echo(f"Driven by test {test_name} (run {run_id})")
        for source in sources.values():
            echo(f"From {source.path} ({source.format}, imported "
                 f"{source.imported_at:%Y-%m-%d %H:%M:%S} UTC)")
        empty = True
        for line in _trace_lines(rows):
            echo(line)
            empty = False
        if empty:
            echo("No errors in this session." if errors_only else "No logs in this session.")


def _session_uuid(value: str, param_hint: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise click.BadParameter(
            f"{value[:40]!r} is not a session id; session ids are UUIDs like "
            "3f2c9a1e-8b7d-4c1a-9e2f-0a1b2c3d4e5f", param_hint=param_hint) from None


def _session_lines(session) -> list[str]:
    """The session's OTA facts above its trace; none for a session that has none."""
    head = f"Session {session.id}: {session.status}"
    if session.trigger is not None:
        head += f", trigger {session.trigger}"
    if session.session_type:
        head += f", type {session.session_type}"
    lines = [head]
    tls = []
    if session.tls_version or session.tls_cipher_suite:
        tls.append(" ".join(filter(None, (session.tls_version, session.tls_cipher_suite))))
    if session.tls_psk_identity:
        tls.append(f"identity {session.tls_psk_identity}")
    if session.tls_handshake_ms is not None:
        tls.append(f"handshake {session.tls_handshake_ms:.1f} ms")
    if session.tls_alert:
        code = "" if session.tls_alert_code is None else f" ({session.tls_alert_code})"
        tls.append(f"alert {session.tls_alert}{code}")
    if tls:
        lines.append("TLS: " + ", ".join(tls))
    scp80 = [f"{label} {value}" for label, value in (
        ("TAR", session.tar), ("SPI", session.spi), ("KIc", session.kic), ("KID", session.kid),
        ("counter", session.counter)) if value is not None]
    if session.por_status is not None:
        scp80.append(f"PoR {session.por_status}")
    if scp80:
        lines.append("SCP80: " + ", ".join(scp80))
    if session.admin_script_status is not None:
        lines.append(f"Admin script status: {session.admin_script_status}")
    return lines if len(lines) > 1 or session.trigger is not None else []


def _sources(session_id) -> dict:
    """The trace files a session's rows came from, by id."""
    from ..models import CommLog, TraceSource

    used = CommLog.select(CommLog.source_id).where(CommLog.session == session_id,
                                                   CommLog.source_id.is_null(False)).distinct()
    return {s.id: s for s in TraceSource.select().where(TraceSource.id.in_(used))
            .order_by(TraceSource.id)}


def _as_dict(row, sources) -> dict:
    source = sources.get(row.source_id)
    return {
        "id": row.id,
        "timestamp": row.timestamp,
        "direction": row.direction.value,
        "channel": row.channel,
        "raw_data": row.raw_data,
        "decoded_data": row.decoded_data,
        "status_word": row.status_word,
        "status_message": row.status_message,
        "status_meaning": _meaning(row),
        "latency_ms": row.latency_ms,
        "source": None if source is None else {"path": source.path, "format": source.format},
    }


def _meaning(row) -> str | None:
    # The stored message knows the command (63Cx after a VERIFY query...); the table does not.
    if not row.status_word:
        return None
    from ..status_words import describe_status_word

    return row.status_message or describe_status_word(row.status_word)


_ARROWS = {"command": ">>", "response": "<<", "atr": "**", "reset": "**"}


def _line(row) -> str:
    kind = row.direction.value
    parts = [row.timestamp.strftime("%H:%M:%S.%f")[:-3], _ARROWS.get(kind, "??")]
    if row.channel is not None:
        parts.append(f"ch{row.channel}")
    parts.append(row.raw_data or "-")
    if row.decoded_data:
        parts.append(f"[{row.decoded_data}]")
    if row.status_word:
        parts.append(f"SW={row.status_word} ({_meaning(row)})")
    if row.latency_ms is not None:
        parts.append(f"{row.latency_ms:.1f} ms")
    return "  ".join(parts)


def _trace_lines(rows):
    """The trace as printed: the date heads each day (rows show the time); a BIP exchange,
    ``FETCH: OPEN CHANNEL`` to the answer to ``CLOSE CHANNEL``, is indented between markers."""
    day, bip, closing = None, False, False
    for row in rows:
        if row.timestamp.date() != day:
            day = row.timestamp.date()
            yield f"-- {day:%Y-%m-%d} (UTC) --"
        decoded, kind = row.decoded_data or "", row.direction.value
        if not bip and kind == "command" and decoded.startswith("FETCH: OPEN CHANNEL"):
            bip = True
            yield "+-- BIP: OPEN CHANNEL"
        if not bip:
            yield _line(row)
            continue
        yield "|   " + _line(row)
        if kind == "command" and decoded.startswith("TERMINAL RESPONSE: CLOSE CHANNEL"):
            closing = True
        elif kind == "response" and closing:
            yield "+-- BIP: CLOSE CHANNEL"
            bip = closing = False


@logs.command("import")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--format", "fmt", type=LazyChoice("auto", source="traces.FORMATS"), default="auto",
              show_default=True, help="The files' format; auto recognises it by content.")
@click.option("--session", "session_id", metavar="ID",
              help="Append to this existing session instead of creating one per file.")
@click.option("--split-on-reset", is_flag=True,
              help="Start a new session at every ATR / card reset.")
@click.option("--device", "device_id", type=StoredText("Device.id"), metavar="ID",
              help="Link the sessions to this device.")
@click.option("--card", "card_iccid", type=StoredText("CardProfile.iccid"), metavar="ICCID",
              help="Link the sessions to this card.")
@click.option("--dry-run", is_flag=True, help="Read and decode; write nothing.")
@json_option
@pass_state
def import_command(state: CliState, files, fmt, session_id, split_on_reset, device_id,
                   card_iccid, dry_run, as_json):
    """Import GSMTAP-SIM captures (pcap/pcapng), apdu4j dumps and hex logs, decoded.

    Each file is one transaction and, unless --session is given, one new session
    (type trace-import). A file imported before (same SHA-256) changes nothing.

    \b
    Example:
        cardlink-db logs import simtrace.pcapng --card 8988211000000000001
        cardlink-db logs import gp.dump pyscard.log --device RF8M33 --json
        cardlink-db logs import bench.log --format pysim-shell --split-on-reset
    """
    if session_id is not None and split_on_reset:
        raise click.UsageError("use either --session or --split-on-reset, not both")
    if session_id is not None:
        session_id = _session_uuid(session_id, "--session")
    from ..errors import DatabaseError, NotFoundError, first_line
    from ..traces import import_trace

    manager = state.manager()
    results = []
    for index, path in enumerate(files):
        size = os.path.getsize(path) if not as_json and sys.stdout.isatty() else 0
        with progress_bar(size, os.path.basename(path)) as bar:
            try:
                summary = import_trace(
                    manager, path, fmt, session_id=session_id, split_on_reset=split_on_reset,
                    device_id=device_id, card_iccid=card_iccid, dry_run=dry_run,
                    progress=bar.update if bar is not None else None, name=_stored_name(path))
            except NotFoundError:  # --session, --device or --card: not about this file
                raise
            except (DatabaseError, OSError) as exc:  # one line naming the file it is about
                if state.verbose:
                    raise
                done = f" ({index} file(s) before it imported)" if index else ""
                raise click.ClickException(f"{path}: {first_line(exc)}{done}") from None
        results.append(summary)
        if not as_json:
            for line in _summary_lines(summary):
                echo(line)
    if as_json:
        echo_json([s.as_dict() for s in results])


def _stored_name(path: str) -> str:
    """The file name as stored: bytes that are not UTF-8 (a Latin-1 name from an old capture
    box reaches Python as lone surrogates, which no database column takes) as ``\\xff``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _summary_lines(s) -> list[str]:
    head = f"{s.path} ({s.format})"
    if s.already_imported:
        return [f"{head}: already imported as trace source {s.source_id}; nothing changed"]
    counts = (f"{s.exchanges:,} exchanges, {s.atrs:,} ATRs, {s.resets:,} resets, "
              f"{s.rows:,} rows")
    if s.dry_run:
        where = (f"{s.sessions_created or 'no'} new session(s)" if s.sessions_created
                 or not s.sessions else ", ".join(s.sessions))
        lines = [f"{head}: would import {counts} into {where}; nothing written (dry run)"]
    else:
        where = ", ".join(s.sessions) if s.sessions else "no session (nothing to store)"
        lines = [f"{head}: {counts} into {where}"]
    if s.skipped:
        reasons = ", ".join(f"{why}: {n:,}" for why, n in sorted(s.skipped.items()))
        lines.append(f"  skipped {s.packets_skipped:,} ({reasons})")
    for problem in s.corrupt[:10]:
        lines.append(f"  damaged: {problem}")
    if len(s.corrupt) > 10:
        lines.append(f"  ... and {len(s.corrupt) - 10} more damaged places")
    if s.leftover_bytes:
        lines.append(f"  truncated: the last {s.leftover_bytes:,} bytes are an incomplete "
                     "record and were left out")
    if s.ends_mid_exchange:
        lines.append("  the trace ends with a command that has no response: session failed")
    return lines


__all__ = ["import_command", "logs", "show"]
