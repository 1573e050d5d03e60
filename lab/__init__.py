"""The lab: real Linux hosts on one machine, for tests, benchmarks and the demo.

Modules, smallest first:
  errors     LabError (one-line CLI errors), NotRootError (exit 2)
  state      names, env overrides, LabPaths (state dir, key, inventory, ssh_config),
             HostRecord/LabState and lab.json load/save: what the VM code and tests use
  image      the mmdebstrap rootfs, cached by package list, extracted once
  net        per-lab bridge + subnet, a netns/veth per host, prefix scans
  procs      processes: alive (zombies are gone), kill and wait, kill by netns/state dir
  hosts      start one plain (unshare + sshd) or systemd (systemd-nspawn) host; the one
             wait for any host's sshd (VM too) and its console log's tail
  vm         the qemu flavour: its image (built with image's pieces), start, stop
  render     inventory.py, ssh_config, known_hosts (pure)
  sweep      what a crashed run left (VMs, netns, processes, loops, mounts, cgroups, links)
  lifecycle  plan, up / status / down (what the CLI and the fixture call)
  testing    running_lab() + LabHandle for pytest
  cli        `baomi lab`
"""
