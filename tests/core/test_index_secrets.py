"""Secrets the index keeps are sealed: what a copy of the database shows, key files, rotation,
and what happens without a key (pure logic on real files; the REST and delivery tests show a
webhook set through REST sealed in the index and still signing its calls)."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from noctis.core.index_secrets import KEY_FILE, IndexSecretsUnavailable, is_sealed, sealer
from noctis.settings import Settings

SECRET = "the-pager-hmac-key"
KEY_A = "a" * 40
KEY_B = "b" * 40


def settings(tmp_path: Path, mode: str = "embedded", key: str = "") -> Settings:
    production = (
        {"database_url": "postgresql+psycopg://unused/noctis"} if mode != "embedded" else {}
    )
    return Settings(
        mode=mode, data_dir=tmp_path / "data", index_secrets_key=SecretStr(key), **production
    )


def test_a_sealed_secret_shows_nothing_of_itself_and_opens_with_its_key(tmp_path: Path) -> None:
    seal = sealer(settings(tmp_path, "production", KEY_A))
    sealed = seal.seal(SECRET)
    assert is_sealed(sealed) and SECRET not in sealed
    assert seal.seal(SECRET) != sealed  # a fresh IV each time: equal secrets look different
    assert seal.open(sealed) == SECRET
    with pytest.raises(IndexSecretsUnavailable, match="none of the keys"):
        sealer(settings(tmp_path, "production", KEY_B)).open(sealed)


def test_a_new_key_first_seals_and_the_old_one_after_it_still_opens(tmp_path: Path) -> None:
    old = sealer(settings(tmp_path, "production", KEY_A)).seal(SECRET)
    rotated = sealer(settings(tmp_path, "production", f"{KEY_B}, {KEY_A}"))
    assert rotated.open(old) == SECRET
    assert sealer(settings(tmp_path, "production", KEY_B)).open(rotated.seal(SECRET)) == SECRET


def test_resealing_moves_a_secret_to_the_first_key_and_seals_one_kept_in_clear(
    tmp_path: Path,
) -> None:
    old = sealer(settings(tmp_path, "production", KEY_A)).seal(SECRET)
    rotated = sealer(settings(tmp_path, "production", f"{KEY_B},{KEY_A}"))
    new_only = sealer(settings(tmp_path, "production", KEY_B))
    assert new_only.open(rotated.reseal(old)) == SECRET
    resealed = rotated.reseal("kept-in-clear")
    assert is_sealed(resealed) and new_only.open(resealed) == "kept-in-clear"
    with pytest.raises(IndexSecretsUnavailable):
        new_only.reseal(old)  # a key that never sealed it cannot move it


def test_production_without_a_key_refuses_to_seal_and_cannot_open(tmp_path: Path) -> None:
    sealed = sealer(settings(tmp_path, "production", KEY_A)).seal(SECRET)
    keyless = sealer(settings(tmp_path, "production"))
    with pytest.raises(IndexSecretsUnavailable, match="NOCTIS_INDEX_SECRETS_KEY"):
        keyless.seal(SECRET)
    with pytest.raises(IndexSecretsUnavailable, match="not set here"):
        keyless.open(sealed)
    assert not (tmp_path / "data" / KEY_FILE).exists()  # production never writes a key file


def test_a_value_kept_before_sealing_is_read_as_it_is(tmp_path: Path) -> None:
    assert sealer(settings(tmp_path, "production")).open("kept-in-clear") == "kept-in-clear"


def test_embedded_generates_one_private_key_file_and_keeps_using_it(tmp_path: Path) -> None:
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(sealer(settings(tmp_path)).seal(SECRET)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    key_file = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_text().strip()) >= 32
    assert [p.name for p in key_file.parent.iterdir()] == [KEY_FILE]  # no draft left behind
    later = sealer(settings(tmp_path))  # as after a restart
    assert [later.open(sealed) for sealed in results] == [SECRET] * 8


def test_a_short_key_is_refused_when_the_settings_are_read(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="32 characters or more"):
        settings(tmp_path, "production", f"{KEY_A},short")


def test_an_emptied_or_damaged_key_file_is_refused_not_used(tmp_path: Path) -> None:
    sealed = sealer(settings(tmp_path)).seal(SECRET)
    key_file = tmp_path / "data" / KEY_FILE
    for damaged in ("", "short\n"):
        key_file.write_text(damaged)
        with pytest.raises(IndexSecretsUnavailable, match=str(key_file)):
            sealer(settings(tmp_path)).seal(SECRET)
        with pytest.raises(IndexSecretsUnavailable):
            sealer(settings(tmp_path)).open(sealed)
