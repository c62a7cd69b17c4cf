"""``keys generate|rotate|check``: the Fernet keys that encrypt PSKs."""

from __future__ import annotations

import os

import click

from .base import CliState, cli, echo, echo_json, json_option, pass_state

__all__ = ["keys"]


@cli.group()
def keys():
    """Manage the encryption keys of stored PSKs.

    Keys come from CARDLINK_ENCRYPTION_KEYS (several, newest first),
    CARDLINK_ENCRYPTION_KEY, or the file named by CARDLINK_ENCRYPTION_KEY_FILE.

    Example:

    \b
        export CARDLINK_ENCRYPTION_KEY="$(cardlink-db keys generate)"
    """


@keys.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the key to a new file with mode 0600 instead of printing it.")
def generate(output):
    """Print a new random Fernet key.

    Example:

    \b
        cardlink-db keys generate
        cardlink-db keys generate --output ~/.cardlink.key
    """
    from .. import crypto

    if output == "":  # -o "$UNSET_VAR": never fall back to printing the secret
        raise click.BadParameter("the path is empty (an unset variable?); give a file path, "
                                 "or leave out --output to print the key",
                                 param_hint="'--output' / '-o'")
    key = crypto.generate_key()
    if output is None:
        click.echo(key)
        return
    try:
        fd = os.open(output, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        raise click.ClickException(f"{output} already exists; choose another path (a key file "
                                   "is never overwritten)") from None
    try:
        os.write(fd, (key + "\n").encode())
        os.fsync(fd)
    except OSError as exc:  # a full disk: no empty key file for the retry to trip on
        os.close(fd)
        os.unlink(output)
        raise click.ClickException(f"cannot write {output!r}: {exc.strerror}; nothing was "
                                   "kept there: free some space and rerun") from None
    os.close(fd)
    click.echo(f"Wrote a new key to {output} (mode 0600); use it with:")
    click.echo(f"  export CARDLINK_ENCRYPTION_KEY_FILE={output}")


@keys.command()
@pass_state
def rotate(state: CliState):
    """Re-encrypt every stored PSK with the newest key, in one transaction.

    Put the new key first and the old ones after it, rotate, then drop the
    old keys once `keys check` shows the newest key opens everything.

    Example:

    \b
        export CARDLINK_ENCRYPTION_KEYS="$NEW_KEY,$OLD_KEY"
        cardlink-db keys rotate
    """
    from .. import crypto

    newest = crypto.configured_keys()[0]
    count = crypto.rotate_psks(state.manager())
    click.echo(f"Re-encrypted {count} PSK(s) with key 1 ({newest['source']}, "
               f"fingerprint {newest['fingerprint']}).")


@keys.command()
@json_option
@pass_state
def check(state: CliState, as_json: bool):
    """Report how many PSKs each configured key opens; exit 1 if some open with none.

    Example:

    \b
        cardlink-db keys check --json
    """
    from .. import crypto

    report = crypto.check_keys(state.manager(readonly=True))
    if as_json:
        echo_json(report)
    else:
        click.echo(f"{report['total']} stored PSK(s)")
        for entry in report["keys"]:
            click.echo(f"  key {entry['position']} ({entry['source']}, fingerprint "
                       f"{entry['fingerprint']}): opens {entry['opens']}")
        if report["unreadable"]:
            echo(f"  no key opens {len(report['unreadable'])} PSK(s): "
                 + ", ".join(report["unreadable"]))
        else:
            click.echo("  every PSK can be opened")
    if report["unreadable"]:
        raise click.ClickException(
            f"{len(report['unreadable'])} PSK(s) cannot be opened with the configured keys; "
            "add the old key to CARDLINK_ENCRYPTION_KEYS (after the new one) and rerun")
