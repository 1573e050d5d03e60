"""testinfra check run by the lab tests in a subprocess (not collected by the main run)."""


def test_marker_file(host):  # type: ignore[no-untyped-def]
    marker = host.file("/etc/baomi-lab-marker")
    assert marker.exists
    assert marker.content_string == "deployed-by-pyinfra\n"
    assert marker.mode == 0o644
