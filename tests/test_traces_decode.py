"""The APDU decoder: command names (ISO 7816-4, TS 102 221, GlobalPlatform, TS 102 223 CAT),
logical channels, T=0 exchange splitting and command-dependent status-word meanings."""

import pytest

from cardlink_lite.status_words import describe_after_command, is_more_data
from cardlink_lite.traces.decode import (
    channel_of,
    command_body,
    command_name,
    decode_exchange,
    describe_atr,
    split_t0_exchange,
)

H = bytes.fromhex

# Proactive commands as FETCH returns them: D0 len, command details 81 03 nn tt qq, ...
OPEN_CHANNEL = "D016810301400182028182350702030403041F0239020578"
CLOSE_CHANNEL = "D009810301410082028121"
SEND_SMS = "D009810301130082028183"
SEND_DATA = "D00F810301430182028121B60401020304"


@pytest.mark.parametrize("cmd, response, name", [
    ("00A4040007A0000000871002", "", "SELECT AID A0000000871002"),
    ("00A40004023F00", "", "SELECT 3F00"),
    ("00A40804047FFF6F07", "", "SELECT path 7FFF/6F07"),
    ("00B0000010", "", "READ BINARY"),
    ("00B2010410", "", "READ RECORD 1"),
    ("00DC010403112233", "", "UPDATE RECORD 1"),
    ("00C0000010", "", "GET RESPONSE"),
    ("0020000108" + "31323334FFFFFFFF", "", "VERIFY 01"),
    ("0020000100", "", "VERIFY 01 (retry counter query)"),
    ("002C000100", "", "UNBLOCK PIN 01 (retry counter query)"),
    ("0070000001", "", "MANAGE CHANNEL open"),
    ("0070800200", "", "MANAGE CHANNEL close 2"),
    ("008800811022" + "00" * 16, "", "AUTHENTICATE"),
    ("A088000010" + "00" * 16, "", "RUN GSM ALGORITHM"),
    ("80F2000C00", "", "STATUS"),
    ("80F24000024F00", "", "GET STATUS applications"),
    ("84F280000A4F003299F2EBF943CC04", "", "GET STATUS issuer security domain"),
    ("8050000008" + "11" * 8, "", "INITIALIZE UPDATE key version 00"),
    ("8482010010" + "22" * 16, "", "EXTERNAL AUTHENTICATE (C-MAC)"),
    ("8482330010" + "22" * 16, "",
     "EXTERNAL AUTHENTICATE (C-DECRYPTION, R-ENCRYPTION, C-MAC and R-MAC)"),
    ("84D801814B" + "00" * 0x4B, "", "PUT KEY version 01 key 01"),
    ("80E60C0010" + "00" * 16, "", "INSTALL [for install and make selectable]"),
    ("80E6020010" + "00" * 16, "", "INSTALL [for load]"),
    ("80E8000310" + "00" * 16, "", "LOAD block 3"),
    ("80E8800410" + "00" * 16, "", "LOAD block 4 (last)"),
    ("80E2800004" + "00" * 4, "", "STORE DATA block 0 (last)"),
    ("80E400800A4F08A000000151000001", "", "DELETE"),
    ("00E40000024F00", "", "DELETE FILE"),
    ("80CA00E000", "", "GET DATA"),
    ("8010000014" + "FF" * 20, "", "TERMINAL PROFILE"),
    ("8012000020", OPEN_CHANNEL, "FETCH: OPEN CHANNEL"),
    ("8012000010", CLOSE_CHANNEL, "FETCH: CLOSE CHANNEL"),
    ("801200000C", SEND_SMS, "FETCH: SEND SHORT MESSAGE"),
    ("8012000011", SEND_DATA, "FETCH: SEND DATA"),
    ("8012000011", "", "FETCH"),
    ("801400000C810301400182028281830100", "",
     "TERMINAL RESPONSE: OPEN CHANNEL, result 00 (command performed successfully)"),
    ("801400000D81030143018202828183023A03", "",
     "TERMINAL RESPONSE: SEND DATA, result 3A (Bearer Independent Protocol error, "
     "additional info 03)"),
    ("80C2000009D60799010982028281", "", "ENVELOPE: EVENT DOWNLOAD: DATA AVAILABLE"),
    ("80C2000009D60799010A82028281", "", "ENVELOPE: EVENT DOWNLOAD: CHANNEL STATUS"),
    ("80C2000010D10E820283818B080102030405060708", "", "ENVELOPE: SMS-PP DOWNLOAD"),
    ("00CB3FFF0A4D08700650045C02DF7000", "", "GET DATA"),
    ("00FF000000", "", "INS FF"),
])
def test_command_names(cmd, response, name):
    assert command_name(H(cmd), H(response)) == name


def test_malformed_commands_never_raise():
    for cmd in ("", "00", "00A4", "14", "801400", "80140000", "8014000000FF", "80C2000000",
                "80C2000001D1", "80C2000003D1FF01", "801400000381FF00"):
        name, _, _ = decode_exchange(H(cmd), H("9000"))
        assert isinstance(name, str)


def test_fetch_names_the_proactive_command_on_both_rows():
    assert decode_exchange(H("8012000020"), H(OPEN_CHANNEL + "9000")) == (
        "FETCH: OPEN CHANNEL", "proactive command OPEN CHANNEL",
        "Success: normal ending of the command")


def test_manage_channel_response_names_the_channel():
    assert decode_exchange(H("0070000001"), H("019000"))[1] == "channel 1 opened"


@pytest.mark.parametrize("cla, channel", [
    (0x00, 0), (0x01, 1), (0x02, 2), (0x03, 3), (0x80, 0), (0x81, 1), (0x82, 2), (0x83, 3),
    (0x84, 0), (0x87, 3), (0x40, 4), (0x4F, 19), (0xC1, 5), (0xE3, 7), (0xA0, 0), (0xFF, None),
])
def test_logical_channel_from_cla(cla, channel):
    assert channel_of(cla) == channel


@pytest.mark.parametrize("cmd, data, le", [
    ("00A4040000", "", 256),
    ("00B0000010", "", 16),
    ("00A40004023F00", "3F00", None),
    ("00A4040002A00000", "A000", 0x100),  # case 4S: Le 00 means 256
    ("00B0000000FFFF", "", 0xFFFF),        # case 2E
    ("80E29000000003010203", "010203", None),    # case 3E
    ("80E290000000030102030000", "010203", 65536),  # case 4E, Le 0000
    ("00A4000000FF", "FF", None),                   # P3 00 and one stray byte
    ("00A40000000005AABB", "0005AABB", None),       # Lc 0005 but only 2 bytes follow
])
def test_command_body_short_and_extended(cmd, data, le):
    assert command_body(H(cmd)) == (H(data), le)


@pytest.mark.parametrize("body, cmd, rsp", [
    ("00A40004023F006121", "00A40004023F00", "6121"),
    ("00C0000002ABCD9000", "00C0000002", "ABCD9000"),
    ("80F2000002AB019000", "80F2000002", "AB019000"),       # STATUS: outgoing
    ("80F24000024F009000", "80F24000024F00", "9000"),       # GP GET STATUS: incoming
    ("8012000003D001009000", "8012000003", "D001009000"),   # FETCH
    ("80E2900000000301020300" + "9000", "80E29000000003010203", "009000"),  # extended
    ("0070000001019000", "0070000001", "019000"),
    ("00A40004", "00A4", "0004"),  # too short: the last two bytes are the SW
    # 61xx / 9Fxx: the P3 bytes went in (case 4), the answer waits for GET RESPONSE
    ("84CA00E0088D767EAB341C1E1A6114", "84CA00E0088D767EAB341C1E1A", "6114"),  # with a MAC
    ("80CB00FF035C017F6108", "80CB00FF035C017F", "6108"),
    ("00B10000035402006110", "00B1000003540200", "6110"),
    ("A0B1000002AABB9F10", "A0B1000002AABB", "9F10"),
    ("84CA00E0088D767EAB341C1E1A9000", "84CA00E0088D767EAB341C1E1A", "9000"),  # SM CLA
    ("00C0000002ABCD6102", "00C0000002", "ABCD6102"),  # GET RESPONSE: 2 more to come
    ("8012000002D0006105", "8012000002", "D0006105"),
])
def test_split_t0_exchange(body, cmd, rsp):
    assert split_t0_exchange(H(body)) == (H(cmd), H(rsp))


@pytest.mark.parametrize("sw, ins, has_data, meaning", [
    ("63C3", 0x20, False, "3 PIN attempts remaining"),
    ("63C1", 0x20, False, "1 PIN attempt remaining"),
    ("63CA", 0x2C, False, "10 unblock (PUK) attempts remaining"),
    ("63C2", 0x20, True, "Verification failed: 2 retries left"),
    ("63C2", 0xB0, False, "Verification failed: 2 retries left"),
    ("6283", 0xA4, True, "Warning: selected file deactivated"),
    ("6283", 0xB0, False, "Warning: selected file invalidated (or card locked)"),
    ("6300", 0x82, True, "Authentication failed: host cryptogram not verified"),
    ("9300", 0xC2, True, "SIM Application Toolkit busy: the ENVELOPE cannot be processed now"),
    ("9862", 0x88, True, "Authentication error: incorrect MAC"),
    ("6121", 0xA4, True, "Success: 33 response bytes still available (use GET RESPONSE)"),
    ("9000", None, False, "Success: normal ending of the command"),
])
def test_status_word_meanings_depend_on_the_command(sw, ins, has_data, meaning):
    assert describe_after_command(sw, ins, has_data) == meaning


def test_verify_query_through_decode_exchange():
    assert decode_exchange(H("0020000100"), H("63C3"))[2] == "3 PIN attempts remaining"
    assert decode_exchange(H("0020000108" + "31" * 8), H("63C2"))[2] == (
        "Verification failed: 2 retries left")


@pytest.mark.parametrize("sw, more", [("6110", True), ("9F20", True), ("9112", True),
                                      ("9000", False), ("6A82", False), ("63C3", False)])
def test_more_data_status_words(sw, more):
    assert is_more_data(sw) is more


@pytest.mark.parametrize("atr, text", [
    ("3B9F96801FC78031A073BE21136743200718000001A5", "ATR: T=0"),   # UICC: T=0, T=15 global
    ("3BF91300008131FE454A434F503234325232A3", "ATR: T=1"),          # the apdu4j JCOP card
    ("3B8F8001804F0CA000000306030001000000006A", "ATR: T=0, T=1"),  # PC/SC contactless
    ("3B00", "ATR: T=0"),                                            # no TD1: T=0
    ("3BFF", "ATR"), ("", "ATR"), ("00112233", "ATR"),               # cut short / not an ATR
])
def test_atr_protocols(atr, text):
    assert describe_atr(H(atr)) == text
