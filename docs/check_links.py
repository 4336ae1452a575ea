#!/usr/bin/env python3
"""Checks the links between README.md and docs/*.md, and that no GPU result is lost from them.

  python3 docs/check_links.py [OLD_REF]

1. Every `](#a)`, `](docs/F.md#a)` (in README.md), `](F.md#a)` and `](../README.md#a)` (in docs/*.md) names a heading
   of its file, by GitHub's anchor rules (lowercase; punctuation but - and _ dropped; spaces to -; a repeated heading
   gets -1, -2, ...; headings inside ``` blocks do not count); every relative file link names an existing path.
2. Every `bench/gpu/results/...` path and `results/...` name, and every bench/gpu/results folder name, in README.md at
   OLD_REF (default: main) is still named in README.md or docs/gpu-performance-log.md.
Prints each problem and exits 1 if there is one.
"""
import os, re, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def anchors(text):
    seen, out, fence = {}, set(), False
    for line in text.splitlines():
        if line.lstrip().startswith('```'):
            fence = not fence
            continue
        m = None if fence else re.match(r'^(#{1,6})\s+(.*?)\s*#*\s*$', line)
        if not m:
            continue
        h = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', m.group(2))          # links -> their text
        h = h.replace('`', '').replace('*', '')
        slug = re.sub(r'[^\w\- ]', '', h.lower()).replace(' ', '-')
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f'{slug}-{n}')
    return out

def check_links(problems):
    files = ['README.md'] + sorted('docs/' + f for f in os.listdir(os.path.join(ROOT, 'docs')) if f.endswith('.md'))
    texts = {f: open(os.path.join(ROOT, f), encoding='utf-8').read() for f in files}
    cache = {}
    n = 0
    for f, text in texts.items():
        fence = False
        for i, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith('```'):
                fence = not fence
                continue
            if fence:
                continue
            for target in re.findall(r'\]\(([^)\s]+)\)', line):
                if re.match(r'^[a-z]+:', target):
                    continue                                            # http:, mailto:
                path, _, anchor = target.partition('#')
                where = os.path.normpath(os.path.join(os.path.dirname(f), path)) if path else f
                n += 1
                if not os.path.exists(os.path.join(ROOT, where)):
                    problems.append(f'{f}:{i}: {target}: no file {where}')
                    continue
                if anchor:
                    if where not in cache:
                        cache[where] = anchors(open(os.path.join(ROOT, where), encoding='utf-8').read())
                    if anchor not in cache[where]:
                        problems.append(f'{f}:{i}: {target}: no heading #{anchor} in {where}')
    return n

def check_results(old_ref, problems):
    old = subprocess.run(['git', 'show', f'{old_ref}:README.md'], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    new = ''.join(open(os.path.join(ROOT, f), encoding='utf-8').read() for f in ('README.md', 'docs/gpu-performance-log.md'))
    names = set(re.findall(r'(?<![\w-])(?:bench/gpu/)?results/[A-Za-z0-9_.\-/]*[A-Za-z0-9_/]', old))
    folders = os.listdir(os.path.join(ROOT, 'bench/gpu/results'))
    for d in folders:
        if re.search(rf'(?<![\w-]){re.escape(d)}(?![\w-])', old):
            names.add(d)
    for name in sorted(names):
        pattern = rf'(?<![\w-]){re.escape(name)}' if '/' in name else rf'(?<![\w-]){re.escape(name)}(?![\w-])'
        if not re.search(pattern, new):
            problems.append(f'{name}: named in README.md at {old_ref}, now in neither README.md nor docs/gpu-performance-log.md')
    return len(names)

problems = []
links = check_links(problems)
results = check_results(sys.argv[1] if len(sys.argv) > 1 else 'main', problems)
for p in problems:
    print(p)
print(f'{links} links, {results} GPU result names checked: {len(problems)} problem(s)')
sys.exit(1 if problems else 0)
