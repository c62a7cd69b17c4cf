"""The six models on every backend: enums, JSON, UTC milliseconds, UUID keys, cascades."""

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from itertools import pairwise

import pytest

from cardlink_lite import (
    CardProfile,
    CardType,
    CommDirection,
    CommLog,
    Device,
    DeviceType,
    OTASession,
    SessionStatus,
    Setting,
    TestResult,
    TestStatus,
    UnitOfWork,
    ValidationError,
)
from cardlink_lite.fields import new_uuid


def _raw(manager, sql, params=()):
    return [tuple(r) for r in manager.database.execute_sql(sql, params).fetchall()]


def test_enums_stored_as_readable_strings(manager):
    Device.create(id="RF8M33", device_type=DeviceType.PHONE)
    Device.create(id="MODEM1", device_type="modem")
    CardProfile.create(iccid="8901", card_type="eUICC")
    assert sorted(r[0] for r in _raw(manager, "SELECT device_type FROM devices")) == [
        "modem", "phone"]
    assert _raw(manager, "SELECT card_type FROM card_profiles") == [("EUICC",)]
    assert Device.get_by_id("MODEM1").device_type is DeviceType.MODEM
    assert CardProfile.get_by_id("8901").card_type is CardType.EUICC


def test_unknown_enum_value_names_field_and_allowed_values(manager):
    with pytest.raises(ValidationError) as info:
        Device(id="x", device_type="toaster")
    message = str(info.value)
    assert "device_type" in message and "phone" in message and "toaster" in message
    assert Device.select().count() == 0


def test_unknown_keyword_is_refused(manager):
    with pytest.raises(ValidationError, match="no field 'colour'"):
        Device(id="x", device_type="phone", colour="red")


def test_guide_and_design_field_names_both_work(manager):
    Device.create(id="RF8", device_type="phone")
    session = OTASession.create(device_id="RF8", cipher_suite="TLS_PSK_WITH_AES_128_CBC_SHA256",
                                psk_identity="card_001", status=SessionStatus.ACTIVE)
    again = OTASession.get_by_id(session.id)
    assert again.tls_cipher_suite == "TLS_PSK_WITH_AES_128_CBC_SHA256"
    assert again.cipher_suite == again.tls_cipher_suite
    assert again.psk_identity == again.tls_psk_identity == "card_001"
    other = OTASession.create(tls_cipher_suite="X", tls_psk_identity="Y")
    assert OTASession.get_by_id(other.id).cipher_suite == "X"


@pytest.mark.parametrize("value", [{"a": [1, 2, {"b": None}], "ü": "✓"}, [1, "two", 3.5],
                                   "text", 42, True])
def test_json_columns_round_trip(manager, value):
    Setting.create(key="k", value=value)
    assert Setting.get_by_id("k").value == value


def test_timestamps_are_utc_milliseconds(manager):
    naive = datetime(2024, 11, 29, 10, 0, 0, 123456)
    aware = datetime(2024, 11, 29, 12, 0, 0, 654321, tzinfo=timezone(timedelta(hours=2)))
    Device.create(id="a", device_type="phone", last_seen=naive)
    Device.create(id="b", device_type="phone", last_seen=aware)
    a, b = Device.get_by_id("a").last_seen, Device.get_by_id("b").last_seen
    assert a == datetime(2024, 11, 29, 10, 0, 0, 123000, tzinfo=timezone.utc)
    assert b == datetime(2024, 11, 29, 10, 0, 0, 654000, tzinfo=timezone.utc)
    assert a.tzinfo is not None and a.utcoffset() == timedelta(0)
    # ordering by the column follows the millisecond values
    first = Device.select().order_by(Device.last_seen).first()
    assert first.id == "a"


def test_created_and_updated_at_are_maintained(manager):
    device = Device.create(id="d", device_type="phone")
    created = Device.get_by_id("d").created_at
    assert datetime.now(timezone.utc) - created < timedelta(minutes=1)
    device.name = "renamed"
    device.save()
    again = Device.get_by_id("d")
    assert again.created_at == created
    assert again.updated_at >= created


@pytest.mark.parametrize("make_id", [uuid.uuid4, lambda: str(uuid.uuid4())])
def test_uuid_keys_are_dashed_strings(manager, make_id):
    key = make_id()
    OTASession.create(id=key)
    TestResult.create(id=key, run_id="r", suite_name="s", test_name="t",
                      status=TestStatus.PASSED)
    stored = _raw(manager, "SELECT id FROM ota_sessions")[0][0]
    assert stored == str(key) and len(stored) == 36 and stored.count("-") == 4
    assert OTASession.get_by_id(key).id == str(key)
    assert TestResult.get_by_id(str(key)).id == str(key)


@pytest.mark.parametrize("spell", [str.upper, lambda k: "{" + k + "}", lambda k: "urn:uuid:" + k,
                                   lambda k: k.replace("-", "")],
                         ids=["upper", "braces", "urn", "no-dashes"])
def test_other_spellings_of_a_uuid_store_and_find_its_canonical_text(manager, spell):
    key = str(uuid.uuid4())
    OTASession.create(id=spell(key))
    assert _raw(manager, "SELECT id FROM ota_sessions")[0][0] == key
    with UnitOfWork(manager) as uow:
        assert uow.sessions.get_by_id(spell(key)).id == key


def test_bad_uuid_is_refused(manager):
    with pytest.raises(ValidationError, match="UUID"):
        OTASession.create(id="not-a-uuid")
    with pytest.raises(ValidationError, match="UUID"):
        OTASession.create(id=str(uuid.uuid4()) + "\n")


def test_deleting_a_session_deletes_its_logs(manager):
    session = OTASession.create()
    keep = OTASession.create()
    for s in (session, keep):
        CommLog.create(session=s, direction=CommDirection.COMMAND, raw_data="00A4")
    session.delete_instance()
    assert [log.session_id for log in CommLog.select()] == [keep.id]


def test_deleting_a_device_keeps_its_history(manager):
    Device.create(id="RF8", device_type="phone")
    CardProfile.create(iccid="8901")
    session = OTASession.create(device_id="RF8", card_iccid="8901")
    Device.delete_by_id("RF8")
    CardProfile.delete_by_id("8901")
    again = OTASession.get_by_id(session.id)
    assert again.device_id is None and again.card_iccid is None


def test_repr_never_shows_the_psk(manager):
    card = CardProfile.create(iccid="8901", psk_identity="id1", psk_key_encrypted=b"gAAAAAsecret")
    text = repr(CardProfile.get_by_id(card.iccid)) + str(card)
    assert "secret" not in text and "<set>" in text and "8901" in text


def test_every_expected_index_exists(manager):
    from cardlink_lite.models import EXPECTED_INDEXES

    for table, names in EXPECTED_INDEXES.items():
        present = {i.name for i in manager.database.get_indexes(table)}
        assert set(names) <= present, (table, set(names) - present)


def test_plaintext_psk_assigned_by_hand_is_refused(manager):
    from cardlink_lite import EncryptionError

    card = CardProfile(iccid="8901", psk_key_encrypted=b"my_secret_psk_key_16")
    with pytest.raises(EncryptionError, match="create_with_psk"):
        card.save(force_insert=True)
    assert CardProfile.select().count() == 0


def test_enums_print_as_their_values():
    assert f"{DeviceType.MODEM}" == "modem" and str(CardType.USIM) == "USIM"
    assert f"{TestStatus.PASSED:>8}" == "  passed"
    assert DeviceType.PHONE == "phone"


def test_table_names_are_the_plural_snake_case_class_names():
    from cardlink_lite.models import ALL_MODELS

    assert [m._meta.table_name for m in ALL_MODELS] == [
        "devices", "card_profiles", "ota_sessions", "trace_sources", "comm_logs",
        "test_results", "settings", "replay_counters", "test_runs"]


def test_new_keys_are_time_ordered_uuids(manager):
    # Version 7 (RFC 9562): keys made later sort later, so B-tree inserts append.
    first = OTASession.create(session_type="test").id
    key = uuid.UUID(first)
    assert (key.version, key.variant) == (7, uuid.RFC_4122) and str(key) == first
    assert abs((key.int >> 80) - time.time_ns() // 1_000_000) < 60_000
    later = [new_uuid() for _ in range(1000)]
    assert len(set(later)) == 1000
    assert [k[:13] for k in later] == sorted(k[:13] for k in later) and later[0][:13] >= first[:13]


def test_keys_made_in_one_process_sort_in_the_order_made():
    # RFC 9562 6.2 method 1: a counter after the millisecond orders keys made within one.
    made = [new_uuid() for _ in range(20_000)]
    assert all(a < b for a, b in pairwise(made))
    assert {(uuid.UUID(k).version, uuid.UUID(k).variant) for k in made} == {(7, uuid.RFC_4122)}


def test_keys_keep_increasing_when_the_clock_stands_still_or_goes_back(monkeypatch):
    now = [time.time_ns()]
    monkeypatch.setattr(time, "time_ns", lambda: now[0])
    made = [new_uuid() for _ in range(10_000)]  # past the 4,096 a millisecond's counter holds
    now[0] -= 5_000_000_000  # the clock steps back 5 s
    made += [new_uuid() for _ in range(10)]
    assert all(a < b for a, b in pairwise(made))
    stamp = uuid.UUID(made[-1]).int >> 80
    assert 0 < stamp - (now[0] + 5_000_000_000) // 1_000_000 < 10  # ran ahead, a few ms


def test_keys_made_in_many_threads_are_unique_and_each_threads_increase():
    lists = [[] for _ in range(4)]
    start = threading.Barrier(len(lists))

    def make(out):
        start.wait()
        out.extend(new_uuid() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in lists]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({k for out in lists for k in out}) == 20_000
    assert all(out == sorted(out) for out in lists)


def test_rows_made_in_one_millisecond_list_in_the_order_made(manager):
    with UnitOfWork(manager) as uow:
        uow.devices.create(Device(id="D1", device_type="phone"))
        sessions = [uow.sessions.create_session(device_id="D1").id for _ in range(200)]
        results = [uow.tests.create_result(run_id="r", suite_name="s", test_name=f"t{i}",
                                           status="passed").id for i in range(50)]
    with UnitOfWork(manager) as uow:
        assert [s.id for s in uow.sessions.find_by_device("D1", limit=None)] == sessions[::-1]
        assert [r.id for r in uow.tests.find_by_run("r")] == results
