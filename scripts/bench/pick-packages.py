#!/usr/bin/env python3
# One-off helper that chose scripts/bench/repo-packages.txt (committed; the benchmark only reads that file,
# so the corpus does not move when Debian's lists do). Run again only to re-pin a list that the mirror no
# longer serves: python3 scripts/bench/pick-packages.py > scripts/bench/repo-packages.txt
#
# v1: every package of bookworm/main whose name hashes into a fixed 1/32 slice and whose .deb is below
# 40 MB (a mix of sizes like a real repository), at bookworm's own version. v2, like a point release:
# about 5 % of the v1 packages are replaced: by the newer version that bookworm-security/-updates carry (a
# real "other version" of the same package) where there is one, else by another package; on top, 1 % are
# removed and as many other packages added.
import glob, hashlib, subprocess, sys

def packages(pattern):
    for f in sorted(glob.glob('/var/lib/apt/lists/' + pattern)):
        text = subprocess.run(['/usr/lib/apt/apt-helper', 'cat-file', f], capture_output=True, text=True, check=True).stdout
        for stanza in text.split('\n\n'):
            fields = {}
            for line in stanza.split('\n'):
                if ':' in line and not line.startswith(' '):
                    k, v = line.split(':', 1)
                    fields[k] = v.strip()
            if 'Package' in fields and fields.get('Architecture') in ('amd64', 'all'):
                yield fields

def h(s):
    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], 'big')

main = {p['Package']: p for p in packages('*_debian_dists_bookworm_main_binary-amd64_Packages*')}
newer = {}
for p in packages('*bookworm-security_main_binary-amd64_Packages*'):
    newer[p['Package']] = p
for p in packages('*bookworm-updates_main_binary-amd64_Packages*'):
    newer.setdefault(p['Package'], p)

v1 = sorted(n for n, p in main.items() if h('v1:' + n) % 96 == 0 and int(p['Size']) < 40_000_000)
updatable = [n for n in v1 if n in newer and newer[n]['Version'] != main[n]['Version'] and int(newer[n]['Size']) < 40_000_000]
updated = set(sorted(updatable, key=lambda n: h('upd:' + n))[:max(1, len(v1) * 5 // 100)])
# too few packages have a newer version to reach 5 %: the rest of the 5 % are replaced by other packages
replaced = max(0, len(v1) * 5 // 100 - len(updated))
removed = set(sorted((n for n in v1 if n not in updated), key=lambda n: h('rm:' + n))[:len(v1) // 100 + replaced])
added = sorted((n for n, p in main.items() if h('v1:' + n) % 96 == 1 and int(p['Size']) < 40_000_000), key=lambda n: h('add:' + n))[:len(v1) // 100 + replaced]

print('# deltamesh benchmark repository corpus: name version in-v1 in-v2 (chosen by scripts/bench/pick-packages.py)')
rows = []
for n in v1:
    if n in updated:
        rows.append((n, main[n]['Version'], 'v1', int(main[n]['Size'])))
        rows.append((n, newer[n]['Version'], 'v2', int(newer[n]['Size'])))
    elif n in removed:
        rows.append((n, main[n]['Version'], 'v1', int(main[n]['Size'])))
    else:
        rows.append((n, main[n]['Version'], 'v1 v2', int(main[n]['Size'])))
for n in added:
    rows.append((n, main[n]['Version'], 'v2', int(main[n]['Size'])))
for n, v, which, size in sorted(rows):
    print(f'{n} {v} {which} {size}')
t1 = sum(s for _, _, w, s in rows if 'v1' in w)
t2 = sum(s for _, _, w, s in rows if 'v2' in w)
print(f'# v1: {len(v1)} packages, {t1/1e6:.0f} MB; v2: {len(updated)} updated, {len(removed)} removed, {len(added)} added, {t2/1e6:.0f} MB')
