#!/bin/bash
# Run a command from the repo root inside a throw-away QEMU VM whose stock Debian kernel
# boots with a pure cgroup v2 hierarchy (cpu, memory, pids, io, cpuset); its exit status
# comes back as this script's. See docs/host-notes.md, "The cgroup v2 test VM".
#
# Usage (from anywhere):
#   tests/v2vm/run-in-v2-vm.sh ".venv/bin/python -m pytest -m 'not docker and not podman and not lxc' tests/integration/test_bare.py tests/unit"
#
# The host's / is shared read-only over 9p and the repo read-write at the same path.
# Unlike the recipe, /root is NOT hidden under a tmpfs: the repo's .venv links to
# /root/.pyenv/versions/..., so hiding /root would break `.venv/bin/python`. The guest
# sees /root read-only and gets HOME=/tmp/home instead, so nothing writes there. (The
# other choice, a venv built from /usr/bin/python3 inside the guest, would need a
# package install on every boot and test a different interpreter than the host runs.)
#
# Inside, BENCH_V2VM=1 tells tests that they run under slow TCG emulation; CI is passed on.
# Env: MEM (MiB, default 2048), SMP (default 2), TIMEOUT (s, default 420), WORK (cache dir,
# default <repo>/.v2vm, git-ignored: the kernel package is kept there between runs; the
# last run's console output is left in $WORK/vm.log).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd -P)
WORK=${WORK:-$REPO/.v2vm}; MEM=${MEM:-2048}; SMP=${SMP:-2}
GUEST_CMD=${1:?"usage: $0 'command to run in the repo root inside the VM'"}
mkdir -p "$WORK"; WORK=$(cd "$WORK" && pwd -P); cd "$WORK"
export DEBIAN_FRONTEND=noninteractive
need=(); for p in qemu-system-x86 busybox-static stress-ng cpio; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if ((${#need[@]})) || [ ! -d kpkg ]; then apt-get update -q; fi
if ((${#need[@]})); then apt-get install -y -q --no-install-recommends "${need[@]}"; fi
if [ ! -d kpkg ]; then
  KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  apt-get download -q "$KPKG" 2>/dev/null; dpkg -x "$KPKG"_*.deb kpkg; rm -f "$KPKG"_*.deb
fi
VMLINUZ=$WORK/$(ls kpkg/boot/vmlinuz-*); MODDIR=$(ls -d kpkg/lib/modules/*)
# Per-run files in a private directory: two runs at once (a test session and someone's
# hand run) must not rebuild each other's initramfs. Its vm.log is copied to $WORK/vm.log.
RUN=$(mktemp -d "$WORK/run.XXXXXX")
trap 'cp -f "$RUN/vm.log" "$WORK/vm.log" 2>/dev/null; rm -rf "$RUN"' EXIT
MODDIR=$WORK/$MODDIR; cd "$RUN"
# ---- initramfs: static busybox + virtio/9p modules + /init ----
mkdir -p irfs/{bin,dev,proc,sys,newroot,mods}
cp /bin/busybox irfs/bin/busybox; ln -s busybox irfs/bin/sh
# veth and sch_netem: the netem check of the load instrument (tests/integration/test_loadgen.py),
# which the host's module-less kernel cannot run.
MODS="netfs fscache 9pnet 9p virtio_ring virtio 9pnet_virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci overlay veth sch_netem"
for m in $MODS; do
  f=$(find "$MODDIR" -name "$m.ko*" | head -1); [ -n "$f" ] && cp "$f" irfs/mods/; done
# The command travels as a file, never spliced into the init script's text.
{ printf 'export BENCH_V2VM=1 CI=%q\n' "${CI:-}"; printf '%s\n' "$GUEST_CMD"; } > irfs/guest_cmd
cat > irfs/init <<INIT
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $MODS; do [ -e /mods/\$m.ko* ] && { insmod /mods/\$m.ko* || echo "insmod \$m failed"; }; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /newroot
R=/newroot
mount -t proc proc \$R/proc; mount -t sysfs sys \$R/sys; mount -t devtmpfs dev \$R/dev
mkdir -p \$R/dev/shm \$R/dev/pts; mount -t tmpfs shm \$R/dev/shm; mount -t devpts pts \$R/dev/pts
for d in tmp run var/tmp; do mount -t tmpfs -o mode=1777 tmp \$R/\$d; done
# A checkout under /tmp, /run or /var/tmp (CI clones anywhere) lies on the tmpfs just
# mounted there: make its mount point first. Elsewhere it exists on the read-only root.
mkdir -p \$R$REPO 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share \$R$REPO
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 \$R/sys/fs/cgroup
cd \$R && mount --move . / && R=. || echo "mount --move failed"
CG=\$R/sys/fs/cgroup
echo "== cgroup.controllers: \$(cat \$CG/cgroup.controllers)"
# The command runs in a leaf (no-internal-process rule); bench creates its own
# /sys/fs/cgroup/bench/<name> beside it and enables what it needs there.
mkdir \$CG/guest; cp /guest_cmd \$R/tmp/.guest_cmd
chroot \$R /bin/sh -c 'echo \$\$ > /sys/fs/cgroup/guest/cgroup.procs; export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp/home; mkdir -p \$HOME; cd $REPO; . /tmp/.guest_cmd'
echo "GUEST_RC=\$?"
echo "== cgroups left under /sys/fs/cgroup/bench: \$(ls \$CG/bench 2>/dev/null | tr '\n' ' ')"
poweroff -f
INIT
chmod +x irfs/init
(cd irfs && find . | cpio -o -H newc --quiet) > initrd.cpio
# ---- boot: TCG (stock kernels hang under this host's kvm_pvm /dev/kvm) ----
# -cpu max: numpy's wheels need more than qemu64's instruction set (Illegal instruction).
START=$(date +%s.%N)
set +e
timeout "${TIMEOUT:-420}" qemu-system-x86_64 -accel "${ACCEL:-tcg}" -cpu max -m "$MEM" -smp "$SMP" \
  -nographic -no-reboot -kernel "$VMLINUZ" -initrd initrd.cpio \
  -append "console=ttyS0 quiet loglevel=2 panic=-1 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs local,path="$REPO",mount_tag=share,security_model=none,multidevs=remap \
  -nic none | tee vm.log
QEMU_RC=${PIPESTATUS[0]}
set -e
echo "v2vm: wall seconds (boot+run+poweroff): $(awk "BEGIN{print $(date +%s.%N)-$START}")"
if [ "$QEMU_RC" = 124 ]; then echo "v2vm: timed out after ${TIMEOUT:-420} s" >&2; exit 124; fi
RC=$(grep -a -o 'GUEST_RC=[0-9]*' vm.log | tail -1 | cut -d= -f2)
exit "${RC:-99}"
