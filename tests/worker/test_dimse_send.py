"""Routing's C-STORE sender against a destination that dies mid-transfer: the sender hears of
it at once, instead of waiting out its DIMSE timeout with the destination's other transfers."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from pydicom import dcmread

from noctis.worker.dimse_send import Item, Result, send
from support import wait
from support.dicomdata import generate_ct_series
from support.ports import free_port

LOOPBACK = "127.0.0.1"
# A storage SCP that dies (exit without a word) on the first C-STORE it receives.
DYING_PEER = """
import os, sys
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt

def die(event):
    os._exit(9)

ae = AE(ae_title="DYING")
for context in StoragePresentationContexts:
    ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
server = ae.start_server(
    ("127.0.0.1", int(sys.argv[1])), block=False, evt_handlers=[(evt.EVT_C_STORE, die)]
)
print("ready", flush=True)
sys.stdin.read()
"""
TIMEOUT = 120.0  # the sender's DIMSE timeout: far longer than the test may wait


def _items(files: list[Path], spool: Path) -> list[Item]:
    spool.mkdir()
    items = []
    for path in files:
        header = dcmread(path, stop_before_pixels=True)

        def fetch(path: Path = path) -> Path:
            copy = spool / path.name
            copy.write_bytes(path.read_bytes())
            return copy

        items.append(
            Item(path.name, str(header.SOPClassUID), str(header.file_meta.TransferSyntaxUID), fetch)
        )
    return items


def _send_to_a_dying_peer(items: list[Item]) -> list[Result]:
    """Send ``items`` to a peer that dies on the first C-STORE; the results, once the send
    ended (a WaitTimeout if it waits for its DIMSE timeout)."""
    port = free_port()
    peer = subprocess.Popen(
        [sys.executable, "-c", DYING_PEER, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert peer.stdout is not None and peer.stdout.readline() == b"ready\n"
        results: list[Result] = []
        sender = threading.Thread(
            target=lambda: results.extend(
                send(LOOPBACK, port, "DYING", "NOCTIS", items, timeout=TIMEOUT)
            )
        )
        sender.start()
        wait.until(
            lambda: not sender.is_alive(), timeout=20, what="the send to end after the peer died"
        )
        return results
    finally:
        peer.kill()
        peer.wait()


def test_a_destination_dying_mid_transfer_ends_the_send_at_once(tmp_path: Path) -> None:
    files = generate_ct_series(tmp_path / "ct", slices=3, size=32)
    items = _items(files, tmp_path / "spool")
    for _ in range(3):  # the death lands at different moments of the exchange
        results = _send_to_a_dying_peer(items)
        assert [r.key for r in results] == [path.name for path in files]
        assert not any(r.sent for r in results)  # none counted as delivered
        assert "no C-STORE response" in results[0].error
