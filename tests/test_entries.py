from tasks import entries


def make_entry(root, name, binary=b"\x7fCUBIN", source="code"):
    entry = entries.cache_dir(root) / name
    entry.mkdir(parents=True)
    if source is not None:
        (entry / "kernel.cu").write_text(source)
    if binary is not None:
        (entry / "kernel.cubin").write_bytes(binary)
    return entry


def test_complete_means_source_and_non_empty_binary(tmp_path):
    make_entry(tmp_path, "kernel.a.1")
    make_entry(tmp_path, "kernel.b.2", binary=b"")
    make_entry(tmp_path, "kernel.c.3", source=None)
    make_entry(tmp_path, "not-an-entry")
    assert entries.complete_entries(tmp_path) == {"kernel.a.1": {"binary": "kernel.cubin", "size": 6}}


def test_problem_names_the_entry(tmp_path):
    recorded = {"binary": "kernel.cubin", "size": 6}
    assert entries.problem(tmp_path, "kernel.a.1", recorded) == "entry kernel.a.1 missing"
    make_entry(tmp_path, "kernel.a.1", binary=b"xx")
    assert "kernel.a.1 changed" in entries.problem(tmp_path, "kernel.a.1", recorded)


def test_publish_never_replaces_a_complete_entry(tmp_path):
    root, staging = tmp_path / "root", tmp_path / "staging"
    make_entry(root, "kernel.a.1", binary=b"original")
    theirs = make_entry(staging, "kernel.a.1", binary=b"other!")
    assert entries.publish(theirs, root) is False
    assert (entries.cache_dir(root) / "kernel.a.1" / "kernel.cubin").read_bytes() == b"original"


def test_publish_replaces_a_broken_leftover(tmp_path):
    root, staging = tmp_path / "root", tmp_path / "staging"
    make_entry(root, "kernel.a.1", binary=None)
    ours = make_entry(staging, "kernel.a.1", binary=b"fresh")
    assert entries.publish(ours, root) is True
    assert entries.describe(entries.cache_dir(root) / "kernel.a.1") == {"binary": "kernel.cubin", "size": 5}
