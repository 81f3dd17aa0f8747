"""tools/cuda_emu/convert.py IN OUT -- rewrites one CUDA source of gpu/ into
C++ for the emulator (README.md): kernel launches `k<<<g, b, smem, s>>>(args)`
become emu_launch_("k", k, g, b, smem, s, args); `extern __shared__ T x[];`
points x at the block's dynamic shared memory; static `__shared__` arrays
become statics registered for poisoning; a workspace taken through
seqk__workspace is poisoned right after. Comments are left as they are."""
import re, sys, os

def split_top(s):
    out, depth, cur = [], 0, ''
    for ch in s:
        if ch in '([{': depth += 1
        if ch in ')]}': depth -= 1
        if ch == ',' and depth == 0:
            out.append(cur); cur = ''
        else:
            cur += ch
    out.append(cur)
    return [x.strip() for x in out]

def conv_launch(src):
    res, i = '', 0
    pat = re.compile(r'([A-Za-z_]\w*(?:<[^<>;()]*>)?)\s*<<<')
    while True:
        m = pat.search(src, i)
        if not m:
            res += src[i:]; break
        name = m.group(1)
        res += src[i:m.start()]
        j = src.index('>>>', m.end())
        cfg = split_top(src[m.end():j])
        while len(cfg) < 4: cfg.append('0' if len(cfg) == 2 else 'NULL')
        k = src.index('(', j)
        depth, e = 0, k
        while True:
            if src[e] == '(': depth += 1
            elif src[e] == ')':
                depth -= 1
                if depth == 0: break
            e += 1
        args = src[k+1:e]
        res += 'emu_launch_("%s", %s, %s' % (name, name, ', '.join(cfg))
        if args.strip(): res += ', ' + args
        res += ')'
        i = e + 1
    return res

def conv_shared(src):
    out = []
    for line in src.split('\n'):
        m = re.match(r'^(\s*)extern\s+__shared__\s+(\w+)\s+(\w+)\[\];(.*)$', line)
        if m:
            out.append('%s%s *%s = (%s *)emu_dyn_smem();%s' % (m.group(1), m.group(2), m.group(3), m.group(2), m.group(4)))
            continue
        m = re.match(r'^(\s*)__shared__\s+([\w:]+)\s+(.*?);(\s*/\*.*)?$', line)
        if m:
            decls = split_top(m.group(3))
            names = [re.match(r'(\w+)', d).group(1) for d in decls]
            out.append('%sstatic %s %s; %s%s' % (m.group(1), m.group(2), m.group(3),
                       ' '.join('EMU_SHARED_REG(%s);' % n for n in names), m.group(4) or ''))
            continue
        if '__shared__' in line and 'extern' not in line and not line.strip().startswith(('/*', '*')):
            sys.stderr.write('unconverted shared: %s\n' % line)
        out.append(line)
    return '\n'.join(out)

src = open(sys.argv[1]).read()
src = conv_shared(src)
parts = re.split(r'(/\*.*?\*/)', src, flags=re.S)
src = ''.join(x if x.startswith('/*') else conv_launch(x) for x in parts)
def ws_repl(m):
    size, ptr = m.group(1), m.group(2)
    if 'P->ws_offset +' in size:
        return m.group(0) + ' if (!st && %s) emu_poison((char *)%s + P->ws_offset, pl.bytes);' % (ptr, ptr)
    return m.group(0) + ' if (!st && %s) emu_poison(%s, %s);' % (ptr, ptr, size)
src = re.sub(r'seqk__workspace\(fn, ctx, (.+?), &(\w+)\);', ws_repl, src)
open(sys.argv[2], 'w').write(src)
