"""hybrids.memory: the room under a container's memory limit counts reclaimable page cache as
room (as docker stats does), for cgroup v2 and v1."""

from hybrids.memory import cgroup_room, format_bytes


def test_cgroup_v2_room_leaves_out_inactive_page_cache(tmp_path):
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "cgroup").write_text("0::/job\n")
    job = tmp_path / "cg" / "job"
    job.mkdir(parents=True)
    (job / "memory.max").write_text("1000\n")
    (job / "memory.current").write_text("900\n")
    (job / "memory.stat").write_text("anon 300\nfile 600\ninactive_file 500\n")
    assert cgroup_room(tmp_path / "proc", tmp_path / "cg") == 1000 - 900 + 500
    (job / "memory.max").write_text("max\n")
    assert cgroup_room(tmp_path / "proc", tmp_path / "cg") is None  # no limit


def test_cgroup_v1_reads_the_process_own_group(tmp_path):
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "cgroup").write_text("4:memory:/job\n1:cpu:/\n")
    job = tmp_path / "cg" / "memory" / "job"
    job.mkdir(parents=True)
    (job / "memory.limit_in_bytes").write_text("2000\n")
    (job / "memory.usage_in_bytes").write_text("1900\n")
    (job / "memory.stat").write_text("total_inactive_file 400\n")
    assert cgroup_room(tmp_path / "proc", tmp_path / "cg") == 500


def test_format_bytes():
    assert [format_bytes(n) for n in (1e6, 3e9, 5.76e12, 2.1e18)] == ["1.0 MB", "3.0 GB", "5.8 TB", "2.1e6 TB"]
