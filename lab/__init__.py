"""The lab: real Linux hosts on one machine, for tests, benchmarks and the demo.

Modules, smallest first:
  errors     LabError (one-line CLI errors), NotRootError (exit 2)
  state      names, env overrides, LabPaths (state dir, key, inventory, ssh_config),
             HostRecord/LabState and lab.json load/save: what the VM code and tests use
  image      the mmdebstrap rootfs, cached by package list, extracted once
  net        per-lab bridge + subnet, a netns/veth per host, prefix scans
  hosts      start/stop one plain (unshare + sshd) or systemd (systemd-nspawn) host
  render     inventory.py, ssh_config, known_hosts (pure)
  lifecycle  up / status / down (what the CLI and the fixture call)
  testing    running_lab() + LabHandle for pytest
  vm         the qemu flavour (separate owner)
  cli        `baomi lab`
"""
