"""The simulated device: its timing model (loosely; never a performance assertion) and its vectors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from embedlab.simdevice import (DeviceModel, SimDevice, cached_sim_device, is_sim_model, parse_sim_model,
                                row_hashes, sim_vectors)


def rows(n: int, length: int = 12, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(100, 30000, size=rng.integers(2, length + 1)).astype(np.int32) for _ in range(n)]


def test_cost_model_is_the_saturation_curve():
    m = DeviceModel(r_max=1000.0, b_half=50.0)
    assert m.rate(50) == pytest.approx(500.0)
    assert m.batch_seconds(150) == pytest.approx(0.2)  # (150 + 50) / 1000
    assert 150 / m.batch_seconds(150) == pytest.approx(m.rate(150))
    by_tokens = DeviceModel(r_max=1000.0, b_half=50.0, ref_tokens=256)
    assert by_tokens.batch_seconds(100, padded_tokens=100 * 128) == pytest.approx((50 + 50) / 1000)


def test_vectors_are_unit_deterministic_and_depend_on_the_token_ids_only():
    ids = rows(300)
    a = sim_vectors(ids, 64)
    assert a.shape == (300, 64) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    order = np.random.default_rng(1).permutation(300)
    assert np.array_equal(sim_vectors([ids[i] for i in order], 64), a[order])  # batch-independent
    assert np.array_equal(SimDevice(DeviceModel(r_max=1e9, b_half=0, dim=64)).encode_ids(ids, batch_size=7), a)
    assert not np.array_equal(sim_vectors(ids, 64, seed=1), a)
    assert len(set(row_hashes(ids).tolist())) == len({tuple(x.tolist()) for x in ids})
    shifted = [np.append(x, 0) for x in ids]  # one more token: another vector
    assert (np.abs(sim_vectors(shifted, 64) - a).max(axis=1) > 1e-3).all()
    assert sim_vectors([np.zeros(0, np.int32), np.array([5], np.int32)], 8).shape == (2, 8)


def test_encode_spends_the_modelled_device_time_and_records_it():
    model = DeviceModel(r_max=4000.0, b_half=16.0, dim=16)
    dev = SimDevice(model, batch_size=64)
    ids = rows(640)
    t0 = time.perf_counter()
    dev.encode_ids(ids)
    wall = time.perf_counter() - t0
    want = 10 * model.batch_seconds(64)  # 10 batches of 64: 0.2 s
    assert want * 0.95 <= wall < want * 3  # loose: sleeps overshoot, the machine is shared
    assert dev.stats.batches == 10 and want * 0.95 <= dev.stats.forward_seconds <= wall


def test_the_device_releases_the_gil_and_burns_little_cpu():
    dev = SimDevice(DeviceModel(r_max=2000.0, b_half=0.0, dim=16), batch_size=400)
    ids = rows(400)  # one batch of 0.2 s
    counted = []

    def count():
        n, end = 0, time.perf_counter() + 0.1
        while time.perf_counter() < end:
            n += 1
        counted.append(n)

    cpu0 = time.thread_time()
    t = threading.Thread(target=count)
    t0 = time.perf_counter()
    t.start()
    dev.encode_ids(ids)
    wall = time.perf_counter() - t0
    cpu = time.thread_time() - cpu0
    t.join()
    assert cpu < 0.5 * wall  # the batch's time is spent sleeping, not computing
    assert counted[0] > 10_000  # a Python thread ran meanwhile (a held GIL would starve it)


def test_one_device_runs_batches_from_two_threads_one_after_another():
    model = DeviceModel(r_max=1000.0, b_half=0.0, dim=8)
    dev = SimDevice(model, batch_size=100)
    threads = [threading.Thread(target=dev.encode_ids, args=(rows(100),)) for _ in range(2)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.perf_counter() - t0 >= 2 * model.batch_seconds(100) * 0.95


def test_a_sim_model_name_round_trips_and_bad_names_say_why():
    m = parse_sim_model("sim:r_max=66000,b_half=96,dim=32,ref_tokens=256")
    assert m == DeviceModel(r_max=66000, b_half=96, dim=32, ref_tokens=256)
    assert parse_sim_model(m.spec) == m and is_sim_model(m.spec) and not is_sim_model("all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="missing b_half"):
        parse_sim_model("sim:r_max=1")
    with pytest.raises(ValueError, match="unknown key 'speed'"):
        parse_sim_model("sim:r_max=1,b_half=2,speed=3")
    with pytest.raises(ValueError, match="dim must be a int"):
        parse_sim_model("sim:r_max=1,b_half=2,dim=x")
    with pytest.raises(ValueError, match="r_max must be > 0"):
        DeviceModel(r_max=0, b_half=1)
    assert cached_sim_device(m.spec) is cached_sim_device(m.spec)


def test_it_offers_what_the_worker_path_uses_of_the_encoder():
    dev = SimDevice(DeviceModel(r_max=1e6, b_half=8, dim=24))
    vecs = dev.encode_texts(["a cat", "a dog", "a cat"])
    assert vecs.shape == (3, 24) and np.array_equal(vecs[0], vecs[2])
    assert dev.info.dim == 24 and dev.info.sha256 and dev.info.name == dev.model.spec
    for name in ("device", "compiled", "compile_error", "torch_threads", "max_batch_tokens",
                 "keeps_freed_memory", "stats", "dim"):
        assert hasattr(dev, name)
    assert dev.stats.tokens > 0 and dev.stats.padding_waste >= 0
