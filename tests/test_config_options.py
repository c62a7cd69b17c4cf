"""URL options the driver would reject with a bug-like error are refused up front, naming
the option (and the file), never a password."""

import pytest
from click.testing import CliRunner

from cardlink_lite import ConfigurationError, DatabaseConfig
from cardlink_lite.cli import cli


def test_an_unknown_mysql_charset_names_the_option():
    with pytest.raises(ConfigurationError, match=r"option charset .* MySQL character set "
                                                 r"such as utf8mb4; got 'utf8mb4x'"):
        DatabaseConfig("mysql://root@127.0.0.1/test?charset=utf8mb4x")
    assert DatabaseConfig("mysql://u@h/db?charset=latin1").connect_kwargs()["charset"] == "latin1"


@pytest.mark.parametrize("option", ["ssl_ca", "ssl_cert", "ssl_key"])
def test_a_missing_ssl_file_names_the_option_and_the_path(option, tmp_path):
    path = tmp_path / "certs" / "missing-ca-cert.pem"
    with pytest.raises(ConfigurationError) as caught:
        DatabaseConfig(f"mysql://root@127.0.0.1/test?{option}={path}")
    assert str(caught.value) == (f"option {option} in the database URL names no file at "
                                 f"'{path}'; check the path")
    path.parent.mkdir()
    path.write_text("x")
    assert DatabaseConfig(f"mysql://u@h/db?{option}={path}").connect_kwargs()[option] == str(path)


@pytest.mark.parametrize(("url", "part"), [
    ("postgresql://post%00gres@127.0.0.1/test", "user name"),
    ("postgresql://postgres:se%00cret@127.0.0.1/test", "password"),
    ("postgresql://postgres@127.0.0.1/test?application_name=a%00b", "option application_name"),
    ("mysql://root:se%00cret@127.0.0.1/test", "password"),
    ("sqlite:///a%00b.db", "file name"),
])
def test_a_nul_character_is_refused_naming_the_part(url, part):
    with pytest.raises(ConfigurationError) as caught:
        DatabaseConfig(url)
    message = str(caught.value)
    assert message.startswith(f"the {part} in the database URL has a NUL character (%00)")
    assert "cret" not in message


def test_the_cli_prints_one_error_line_for_a_bad_option():
    result = CliRunner().invoke(cli, ["--database", "mysql://root@127.0.0.1/t?charset=x",
                                      "status"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: option charset in the database URL must be")
    assert "unexpected" not in result.output
