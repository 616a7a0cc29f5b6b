"""lab.heap: the allocator settings a scoped derivation restores, and those training keeps for the process."""

import lab.heap as heap


class FakeLibc:
    """Records mallopt's settings and malloc_trim's calls, as glibc would take them."""

    def __init__(self):
        self.settings, self.trims = {}, 0

    def mallopt(self, parameter, value):
        self.settings[parameter] = value
        return 1

    def malloc_trim(self, pad):
        self.trims += 1
        return 1


def test_a_scoped_block_restores_glibcs_thresholds_unless_the_process_keeps_its_memory(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: libc)
    monkeypatch.setattr(heap, "_process_wide", [])
    with heap.reuse_freed_memory():
        assert libc.settings == {heap._M_MMAP_THRESHOLD: heap.KEPT, heap._M_TRIM_THRESHOLD: heap.KEPT}
    assert libc.settings == {heap._M_MMAP_THRESHOLD: 32 << 20, heap._M_TRIM_THRESHOLD: 64 << 20}
    assert libc.trims == 1
    # A training process keeps its memory; a derivation run inside it (a pipeline's transition) must not
    # undo that for the stages that follow.
    assert heap.keep_freed_memory()
    with heap.reuse_freed_memory():
        pass
    assert libc.settings == {heap._M_MMAP_THRESHOLD: heap.KEPT, heap._M_TRIM_THRESHOLD: heap.KEPT}
    assert libc.trims == 2


def test_without_glibc_nothing_is_set(monkeypatch):
    monkeypatch.setattr(heap, "_glibc", lambda: None)
    monkeypatch.setattr(heap, "_process_wide", [])
    assert not heap.keep_freed_memory()
    with heap.reuse_freed_memory():
        pass
    assert heap._process_wide == []
