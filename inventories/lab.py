"""The running lab guests (`llmhost lab up`) as pyinfra hosts in the group `lab`."""

from llmhost_lab.lab import guests as _guests
from llmhost_lab.lab import is_running as _is_running

lab = [
    (
        f"lab-{_g.name}",
        {
            "ssh_hostname": _g.address,
            "ssh_user": _g.ssh_user,
            "ssh_port": _g.ssh_port,
            "ssh_key": _g.ssh_key,
            # Every rebuilt guest has new host keys.
            "ssh_strict_host_key_checking": "no",
            "ssh_known_hosts_file": "/dev/null",
        },
    )
    for _g in _guests()
    if _is_running(_g)
]

if not lab:
    raise SystemExit("inventories/lab.py: no lab guest is up; run `llmhost lab up` first")
