#!/usr/bin/env bash
# The GPU host the deploy targets, on the GPU test machine (no systemd, no sshd there): a
# systemd-nspawn --boot guest whose root is an overlay of the machine's own Ubuntu 24.04 plus
# Debian 12's systemd, nspawn and sshd (../shared/gpu/guest/ is where the recipe was proven),
# with the GPU's device nodes bound in and sshd on root@ADDRESS:22 (key /tmp/guest-key), ADDRESS
# (in /tmp/g/address) a non-loopback address of the machine, so that the post-deploy suite's
# "only the gateway port answers from outside" has an outside to ask from.
#   guest.sh boot DEBS_DIR APT_REPO_DIR   make the root once, then start
#   guest.sh start | stop                 power on / cleanly power off the same root (a reboot)
# The guest shares the machine's network; the wheelhouse and the model store are bound in from
# the machine (GH_WHEELHOUSE, GH_STORE) so that gigabytes are not copied into the overlay.
set -u
G=/tmp/g
GH=${GH:-/tmp/gh}
here=$(dirname "$(readlink -f "$0")")
SDL=$G/sd/usr/lib/x86_64-linux-gnu/systemd:$G/sd/usr/lib/x86_64-linux-gnu:$G/sd/lib/x86_64-linux-gnu
SSH=(env LD_LIBRARY_PATH=$SDL $G/sd/usr/bin/ssh -i /tmp/guest-key -o StrictHostKeyChecking=no
     -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=2 root@127.0.0.1)

make_root() {  # DEBS_DIR APT_REPO_DIR
  umount -R $G/root 2>/dev/null; rm -rf $G; mkdir -p $G/up $G/work $G/root $G/sd
  # nspawn removes its propagation dir under /run/systemd, and refuses to on a disk file system.
  mountpoint -q /run/systemd || { mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd; }
  mount -t overlay overlay -o lowerdir=/,upperdir=$G/up,workdir=$G/work $G/root || exit 1
  for d in "$1"/*.deb; do dpkg -x "$d" $G/sd; done
  python3 "$here/overlay_copy.py" $G/sd $G/root
  tr -d - < /proc/sys/kernel/random/uuid > $G/root/etc/machine-id
  mount --bind /dev $G/root/dev
  chroot $G/root ssh-keygen -A >/dev/null
  cp -n $G/root/usr/share/openssh/sshd_config $G/root/etc/ssh/sshd_config
  chroot $G/root sh -c 'id sshd >/dev/null 2>&1 || useradd -r -M -d /run/sshd -s /usr/sbin/nologin sshd'
  umount $G/root/dev
  mkdir -p $G/root/etc/systemd/system/multi-user.target.wants
  ln -sf /lib/systemd/system/ssh.service $G/root/etc/systemd/system/multi-user.target.wants/ssh.service
  mkdir -p $G/root/root/.ssh; rm -f /tmp/guest-key /tmp/guest-key.pub
  LD_LIBRARY_PATH=$SDL $G/sd/usr/bin/ssh-keygen -q -t ed25519 -N '' -f /tmp/guest-key
  cp /tmp/guest-key.pub $G/root/root/.ssh/authorized_keys
  # The only apt source the guest has: Debian 12's haproxy / prometheus in a local repository
  # (Ubuntu's mirrors are unreachable there; apt-get update must not fail on them).
  mkdir -p $G/root/srv/debrepo && cp "$2"/* $G/root/srv/debrepo/
  rm -f $G/root/etc/apt/sources.list.d/* $G/root/etc/apt/sources.list
  echo 'deb [trusted=yes] file:/srv/debrepo ./' > $G/root/etc/apt/sources.list.d/llmhost-bench.list
  # The driver's tools are under /usr/local/nvidia (bound in): put nvidia-smi on sshd's PATH.
  if ! chroot $G/root sh -c 'command -v nvidia-smi' >/dev/null; then
    ln -sf /usr/local/nvidia/bin/nvidia-smi $G/root/usr/local/bin/nvidia-smi
  fi
  # The image's docker-style policy-rc.d (exit 101) stops postinsts from starting services; a
  # real host has none (seen: haproxy's postinst "policy-rc.d denied execution of start").
  rm -f $G/root/usr/sbin/policy-rc.d
  # VLLM_USE_FLASHINFER_SAMPLER=0 is the services' own `env` now (group_data.py).
  # The machine has no ssh client; testinfra and `llmhost status` run `ssh`: Debian's, on PATH.
  mkdir -p "$GH/bin"
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$SDL" "$G/sd/usr/bin/ssh" > "$GH/bin/ssh"
  chmod +x "$GH/bin/ssh"
  mkdir -p "$GH/wheelhouse" "$GH/store"
}

address() {  # a non-loopback address of the machine: a dummy link of its own, else its first
  if command -v ip >/dev/null; then
    ip link show llmhost0 >/dev/null 2>&1 || ip link add llmhost0 type dummy
    ip addr replace 10.213.0.1/32 dev llmhost0 && ip link set llmhost0 up && echo 10.213.0.1 && return
  fi
  hostname -I 2>/dev/null | tr ' ' '\n' | grep -v '^127\.' | grep -m1 '\.' || echo 127.0.0.1
}

start() {
  address > $G/address
  # The controllers stay enabled after the first boot (writing them again then fails: EBUSY).
  mkdir -p /sys/fs/cgroup/gpulab; echo "+cpu +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
  date +%s.%N > $G/boot.t
  ( echo $BASHPID > /sys/fs/cgroup/gpulab/cgroup.procs
    LD_LIBRARY_PATH=$SDL exec setsid $G/sd/usr/bin/systemd-nspawn -D $G/root --boot --register=no \
      --keep-unit --link-journal=no -M gpu --bind=/dev/nvidia0 --bind=/dev/nvidiactl \
      --bind=/dev/nvidia-uvm --bind=/dev/nvidia-uvm-tools --bind=/dev/nvidia-caps \
      --bind-ro=/usr/local/nvidia --bind="$GH/wheelhouse:/opt/llmhost/wheelhouse" \
      --bind="$GH/store:/srv/llmhost/models" >>$G/console.log 2>&1 < /dev/null ) &
  echo $! > $G/nspawn.pid
  for _ in $(seq 1 60); do
    "${SSH[@]}" true 2>/dev/null && { echo "guest up at $(cat $G/address): ssh after $(awk "BEGIN{print $(date +%s.%N)-$(cat $G/boot.t)}") s"; return 0; }
    sleep 1
  done
  echo "guest did not answer ssh in 60 s"; tail -c 3000 $G/console.log; return 1
}

stop() {  # SIGTERM to nspawn is a clean power-off (never to the guest's systemd: it re-execs)
  local pid; pid=$(cat $G/nspawn.pid)
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 180); do kill -0 "$pid" 2>/dev/null || { echo "guest powered off"; return 0; }; sleep 1; done
  echo "guest still running after 180 s"; return 1
}

case ${1:-} in
  boot) make_root "$2" "$3" && start ;;
  start) start ;;
  stop) stop ;;
  ssh) shift; "${SSH[@]}" "$@" ;;
  *) echo "usage: guest.sh boot DEBS_DIR APT_REPO_DIR | start | stop | ssh CMD"; exit 2 ;;
esac
