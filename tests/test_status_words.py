"""Status-word meanings (ISO 7816-4, ETSI TS 102 221, GlobalPlatform)."""

import pytest

from cardlink_lite import ValidationError, describe_status_word
from cardlink_lite.status_words import is_success, normalize_status_word


@pytest.mark.parametrize("sw, expected", [
    ("9000", "Success: normal ending of the command"),
    ("6a82", "File or application not found"),
    ("6982", "Security status not satisfied"),
    ("6D00", "Instruction code not supported or invalid"),
    ("6E12", "Class not supported"),
    ("6700", "Wrong length (Lc or Le)"),
    ("6985", "Conditions of use not satisfied"),
    ("6A80", "Incorrect parameters in the data field"),
    ("6A86", "Incorrect parameters P1-P2"),
    ("6110", "Success: 16 response bytes still available (use GET RESPONSE)"),
    ("6C20", "Wrong Le field: resend with Le = 32"),
    ("63C2", "Verification failed: 2 retries left"),
    ("9F1A", "Success: 26 response bytes available (use GET RESPONSE)"),
    ("910B", "Success: a proactive command of 11 bytes is pending (use FETCH)"),
    ("9202", "Success after 2 internal retries of the update routine"),
    ("9240", "Memory problem"),
    ("9300", "SIM Application Toolkit busy: command cannot be executed now"),
    ("9840", "Unsuccessful CHV verification, no attempt left (CHV blocked)"),
    ("98FF", "Security management error"),
    ("1234", "Unknown status word"),
])
def test_meanings(sw, expected):
    assert describe_status_word(sw) == expected


def test_forms_accepted_and_refused():
    assert normalize_status_word(b"\x6a\x82") == "6A82"
    assert normalize_status_word(0x9000) == "9000"
    assert normalize_status_word("90 00") == "9000"
    for bad in ("90", "900G", "90000", None):
        with pytest.raises(ValidationError, match="status_word must be 4 hex digits"):
            describe_status_word(bad)


def test_success():
    assert all(is_success(sw) for sw in ("9000", "6110", "9F20", "9105", "9201"))
    assert not any(is_success(sw) for sw in ("6A82", "6310", "9240", "6283"))
