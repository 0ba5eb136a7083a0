"""Copy a staging tree into ROOT without replacing anything ROOT already has (parent symlinks
followed): Debian's systemd and sshd go into the guest only where Ubuntu has no such file, so
Ubuntu's newer libraries stay. Usage: python3 overlay_copy.py STAGING ROOT"""

from __future__ import annotations

import os
import shutil
import sys


def main(src: str, root: str) -> int:
    n = 0
    for d, dirs, files in os.walk(src):
        rel = os.path.relpath(d, src)
        for f in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            s, t = os.path.join(d, f), os.path.join(root, rel, f)
            if os.path.lexists(t):
                continue
            os.makedirs(os.path.dirname(t), exist_ok=True)
            if os.path.islink(s):
                os.symlink(os.readlink(s), t)
            else:
                shutil.copy2(s, t)
            n += 1
    print("copied", n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
