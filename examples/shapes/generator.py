# Copied unchanged (apart from this header) from shared/synthclip/generator.py in the dualpt steering
# repository: the generator of the synthetic world the demo CLIP in model/ was pretrained on.
"""Deterministic procedural generator for the synthetic vision-language world.

Every image shows one main object described by
    shape   (10): circle square triangle star cross ring diamond heart hexagon arrow
    colour  (8):  red orange yellow green cyan blue purple pink
                  (+ 8 "muted" colours used rarely in pretraining and in the shifted domain)
    texture (4):  solid striped dotted checkered
    size    (2):  small large
    bg      (3):  dark light noisy   (+ "tinted" in the shifted domain only)
plus position / rotation / colour jitter and 0-3 small distractor shapes.

Captions are partial, web-like English descriptions using a random subset of the
attributes and many templates.  `make_caption` returns the caption and the dict of
attributes it mentions (used for the multi-positive contrastive loss).

All randomness flows through a numpy Generator, so everything is reproducible from a seed.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

IMG = 64          # output resolution
SS = 4            # supersampling factor for anti-aliased shape masks

SHAPES = ['circle', 'square', 'triangle', 'star', 'cross', 'ring', 'diamond', 'heart', 'hexagon', 'arrow']
COLOURS = {
    'red': (220, 35, 35), 'orange': (245, 135, 20), 'yellow': (240, 215, 35), 'green': (40, 165, 60),
    'cyan': (40, 200, 215), 'blue': (35, 70, 215), 'purple': (135, 55, 190), 'pink': (245, 120, 185),
}
MUTED = {
    'brown': (130, 85, 45), 'olive': (120, 120, 35), 'teal': (30, 120, 115), 'maroon': (120, 25, 45),
    'navy': (30, 35, 105), 'grey': (128, 128, 128), 'beige': (215, 195, 155), 'lavender': (185, 160, 215),
}
ALL_COLOURS = {**COLOURS, **MUTED}
TEXTURES = ['solid', 'striped', 'dotted', 'checkered']
SIZES = ['small', 'large']
BACKGROUNDS = ['dark', 'light', 'noisy']
ATTRS = ['shape', 'colour', 'texture', 'size', 'bg']

# Shifted domain (used only by the "shift" task and the shape@shift probe, never in pretraining):
# muted colours (only 6% of pretraining images, names rarely in captions), half of the backgrounds plain
# mid-tone coloured ("tinted", never seen in pretraining), 2-4 distractors.
SHIFT_PARAMS = {'p_tinted': 0.5, 'distractors': (2, 4), 'distractor_r': (3.0, 4.5)}

# ----------------------------------------------------------------------------- vocabulary
SHAPE_NOUNS = {
    'circle': ['circle', 'circle', 'disc', 'round disc'],
    'square': ['square', 'square', 'box', 'square tile'],
    'triangle': ['triangle', 'triangle', 'triangular shape'],
    'star': ['star', 'star', 'five-pointed star'],
    'cross': ['cross', 'cross', 'plus sign'],
    'ring': ['ring', 'ring', 'donut', 'hollow circle'],
    'diamond': ['diamond', 'diamond', 'rhombus'],
    'heart': ['heart', 'heart', 'love heart'],
    'hexagon': ['hexagon', 'hexagon', 'six-sided shape'],
    'arrow': ['arrow', 'arrow', 'arrow sign'],
}
# phrases of the form "... which has <phrase>" / "... with <phrase>"
SHAPE_PHRASES = {
    'circle': ['a round shape', 'a circular outline', 'no corners', 'a circle shape'],
    'square': ['four equal sides', 'a square shape', 'four right angles'],
    'triangle': ['three corners', 'a triangular shape', 'three sides'],
    'star': ['five points', 'a star shape', 'pointed tips'],
    'cross': ['a plus shape', 'four arms', 'a cross shape'],
    'ring': ['a hole in the middle', 'a ring shape', 'a hollow round outline'],
    'diamond': ['a diamond shape', 'four slanted sides', 'a rhombus outline'],
    'heart': ['a heart shape', 'two rounded lobes', 'a heart outline'],
    'hexagon': ['six sides', 'a hexagonal shape', 'six corners'],
    'arrow': ['a pointed head', 'an arrow shape', 'a long shaft'],
}
TEXTURE_ADJ = {
    'solid': ['solid', 'plain', 'filled'],
    'striped': ['striped', 'stripy'],
    'dotted': ['dotted', 'polka dot', 'spotted'],
    'checkered': ['checkered', 'checkerboard'],
}
TEXTURE_WITH = {  # post-modifier: "a star with stripes"
    'solid': ['a solid fill', 'no pattern'],
    'striped': ['stripes', 'a striped pattern'],
    'dotted': ['dots', 'polka dots', 'a dotted pattern'],
    'checkered': ['a checkered pattern', 'a checkerboard pattern', 'squares in a grid'],
}
TEXTURE_PHRASES = TEXTURE_WITH
SIZE_ADJ = {'small': ['small', 'tiny', 'little'], 'large': ['large', 'big', 'huge']}
SIZE_PHRASES = {'small': ['a small size', 'a tiny size'], 'large': ['a large size', 'a big size']}
BG_SUFFIX = {
    'dark': ['on a dark background', 'on a black background', 'against a dark backdrop'],
    'light': ['on a light background', 'on a white background', 'against a light backdrop'],
    'noisy': ['on a noisy background', 'on a grainy background', 'on a speckled background'],
}
BG_PHRASES = {
    'dark': ['a dark background', 'a black background'],
    'light': ['a light background', 'a white background'],
    'noisy': ['a noisy background', 'a grainy background'],
}


def colour_phrases(c: str) -> List[str]:
    return [f'a {c} colour', f'{c} colouring', f'a {c} hue']


PREFIXES = ['', '', '', 'a photo of', 'an image of', 'a picture of', 'a drawing of', 'a rendering of',
            'clipart of', 'an icon of', 'a close-up of', 'a sketch of', 'a photo of', 'a graphic of']
GENERIC_NOUNS = ['object', 'shape', 'thing', 'icon', 'figure', 'symbol']
WEB_PREFIX = ['IMG_{n}', 'DSC{n}', 'stock image {n}', 'free vector', 'clip art', 'wallpaper', 'my drawing:',
              'new post:', 'lol', 'sticker', 'emoji', 'logo idea', 'download', 'hd', 'pattern #{n}']
WEB_SUFFIX = ['icon', 'clipart', 'png', 'vector', 'illustration', 'by {w}', '#{w}', 'from {w}', '{n}',
              'free download', 'lol', 'for kids', 'design', 'art']
_SYL_A = ['ba', 'ko', 'mi', 'ta', 'ru', 'zen', 'lo', 'fi', 'gar', 'nu', 'pe', 'xo', 'sa', 'do', 'ki', 'wum', 'je',
          'ha', 'vo', 'li', 'ze', 'qua', 'tor', 'mun', 'bex', 'cal', 'dri', 'eno', 'fru', 'gol']


def pseudo_word(rng: np.random.Generator) -> str:
    """Made-up words for web-caption noise (the opaque task uses a disjoint, fixed name list)."""
    n = int(rng.integers(2, 4))
    return ''.join(_SYL_A[int(i)] for i in rng.integers(0, len(_SYL_A), n))


def _pick(rng, xs):
    return xs[int(rng.integers(0, len(xs)))]


def _article(word: str) -> str:
    return 'an' if word[0] in 'aeiou' else 'a'


# ----------------------------------------------------------------------------- attributes
def sample_attrs(rng: np.random.Generator, domain: str = 'pretrain', fixed: Optional[Dict] = None) -> Dict:
    """Sample a full attribute dict.  `fixed` overrides any attribute (shape/colour/texture/size/bg)."""
    fixed = fixed or {}
    a = {'domain': domain}
    a['shape'] = fixed.get('shape', _pick(rng, SHAPES))
    if 'colour' in fixed:
        a['colour'] = fixed['colour']
    elif domain == 'shift':
        a['colour'] = _pick(rng, list(MUTED))
    elif domain == 'pretrain' and rng.random() < 0.06:
        a['colour'] = _pick(rng, list(MUTED))       # rare, "not emphasised"
    else:
        a['colour'] = _pick(rng, list(COLOURS))
    a['texture'] = fixed.get('texture', _pick(rng, TEXTURES))
    a['size'] = fixed.get('size', _pick(rng, SIZES))
    if 'bg' in fixed:
        a['bg'] = fixed['bg']
    elif domain == 'shift':
        a['bg'] = 'tinted' if rng.random() < SHIFT_PARAMS['p_tinted'] else _pick(rng, BACKGROUNDS)
    else:
        a['bg'] = _pick(rng, BACKGROUNDS)
    if domain == 'shift':
        a['n_distractors'] = int(rng.integers(SHIFT_PARAMS['distractors'][0], SHIFT_PARAMS['distractors'][1] + 1))
    elif domain == 'hard':
        a['n_distractors'] = int(rng.integers(1, 4))
    else:
        a['n_distractors'] = int(rng.choice([0, 0, 0, 1, 1, 2]))
    return a


# ----------------------------------------------------------------------------- rendering
def _poly(shape: str) -> Optional[np.ndarray]:
    """Unit-radius polygon (N,2) in y-down image coords, or None for analytic shapes."""
    if shape == 'square':
        return np.array([[-.78, -.78], [.78, -.78], [.78, .78], [-.78, .78]])
    if shape == 'triangle':
        ang = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(ang), np.sin(ang) + 0.18], 1)
    if shape == 'diamond':
        return np.array([[0, -1.], [.62, 0], [0, 1.], [-.62, 0]])
    if shape == 'hexagon':
        ang = np.arange(6) * np.pi / 3
        return np.stack([np.cos(ang), np.sin(ang)], 1) * 0.95
    if shape == 'star':
        ang = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([np.cos(ang) * rad, np.sin(ang) * rad + 0.08], 1)
    if shape == 'cross':
        w = 0.3
        return np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w], [-1, w],
                         [-1, -w], [-w, -w]]) * 0.95
    if shape == 'heart':
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return np.stack([x, y + 2.5], 1) / 16.5
    if shape == 'arrow':
        return np.array([[-1, -.24], [.12, -.24], [.12, -.68], [1, 0], [.12, .68], [.12, .24], [-1, .24]])
    return None


_ROT_JITTER = {'arrow': 180, 'star': 36, 'hexagon': 30, 'circle': 0, 'ring': 0, 'diamond': 10}


def shape_mask(shape: str, cx: float, cy: float, r: float, rot: float) -> np.ndarray:
    """Anti-aliased float mask in [0,1] of shape (IMG, IMG)."""
    S = IMG * SS
    im = Image.new('L', (S, S), 0)
    d = ImageDraw.Draw(im)
    cx, cy, r = cx * SS, cy * SS, r * SS
    if shape in ('circle', 'ring'):
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        if shape == 'ring':
            ri = r * 0.55
            d.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
    else:
        p = _poly(shape)
        c, s = math.cos(rot), math.sin(rot)
        R = np.array([[c, -s], [s, c]])
        p = p @ R.T * r + np.array([cx, cy])
        d.polygon([tuple(q) for q in p], fill=255)
    im = im.reduce(SS)
    return np.asarray(im, dtype=np.float32) / 255.0


_YY, _XX = np.mgrid[0:IMG, 0:IMG].astype(np.float32) + 0.5


def texture_pattern(texture: str, cx: float, cy: float, rng: np.random.Generator) -> np.ndarray:
    """Pattern in [0,1]: 0 -> main colour, 1 -> secondary colour."""
    if texture == 'solid':
        return np.zeros((IMG, IMG), np.float32)
    th = rng.uniform(0, np.pi)
    u = (_XX - cx) * math.cos(th) + (_YY - cy) * math.sin(th)
    v = -(_XX - cx) * math.sin(th) + (_YY - cy) * math.cos(th)
    if texture == 'striped':
        th = _pick(rng, [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]) + rng.uniform(-.2, .2)
        u = (_XX - cx) * math.cos(th) + (_YY - cy) * math.sin(th)
        p = rng.uniform(5.0, 6.5)
        return np.clip(0.5 + 1.6 * np.sin(2 * np.pi * u / p + rng.uniform(0, 6.3)), 0, 1)
    if texture == 'dotted':
        p = rng.uniform(5.0, 6.5)
        ph = rng.uniform(0, p, 2)
        du = (u + ph[0]) % p - p / 2
        dv = (v + ph[1]) % p - p / 2
        dist = np.sqrt(du ** 2 + dv ** 2)
        return np.clip(0.3 * p - dist + 0.5, 0, 1)
    if texture == 'checkered':
        c = rng.uniform(3.6, 4.8)
        return np.clip(0.5 + 2.0 * np.sin(np.pi * u / c) * np.sin(np.pi * v / c), 0, 1)
    raise ValueError(texture)


def _jitter_colour(rgb, rng, amount=18.0):
    c = np.asarray(rgb, np.float32) * rng.uniform(0.88, 1.08) + rng.normal(0, amount / 2, 3)
    return np.clip(c, 0, 255)


def background(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == 'dark':
        base = rng.uniform(5, 55) + rng.normal(0, 6, 3)
        img = np.ones((IMG, IMG, 3), np.float32) * base + rng.normal(0, 2.5, (IMG, IMG, 3))
    elif kind == 'light':
        base = rng.uniform(195, 250) + rng.normal(0, 6, 3)
        img = np.ones((IMG, IMG, 3), np.float32) * base + rng.normal(0, 2.5, (IMG, IMG, 3))
    elif kind == 'noisy':
        base = rng.uniform(70, 180) + rng.normal(0, 8, 3)
        amp = rng.uniform(20, 40)
        mono = rng.random() < 0.5
        n = rng.normal(0, amp, (IMG, IMG, 1 if mono else 3))
        img = np.ones((IMG, IMG, 3), np.float32) * base + n
    elif kind == 'tinted':    # plain mid-tone coloured background (pretraining plains are near-black/white)
        base = rng.uniform(50, 200, 3)
        img = np.ones((IMG, IMG, 3), np.float32) * base + rng.normal(0, 4, (IMG, IMG, 3))
    else:
        raise ValueError(kind)
    return img


def render(a: Dict, rng: np.random.Generator) -> np.ndarray:
    """Render an attribute dict to a uint8 (IMG, IMG, 3) array.  Adds layout fields to `a`."""
    img = background(a['bg'], rng)
    if a['size'] == 'small':
        r = rng.uniform(10.5, 13.0)
    else:
        r = rng.uniform(18.0, 23.0)
    m = 2.0
    cx = rng.uniform(r + m, IMG - r - m)
    cy = rng.uniform(r + m, IMG - r - m)
    jit = _ROT_JITTER.get(a['shape'], 15)
    rot = math.radians(rng.uniform(-jit, jit))
    # distractors (small solid shapes, not overlapping the main object)
    big_d = a.get('domain') == 'shift'
    placed = []
    for _ in range(a.get('n_distractors', 0)):
        rd = rng.uniform(*SHIFT_PARAMS['distractor_r']) if big_d else rng.uniform(2.5, 4.0)
        for _try in range(20):
            dx, dy = rng.uniform(rd + 1, IMG - rd - 1, 2)
            if math.hypot(dx - cx, dy - cy) > r + rd + 2 and all(math.hypot(dx - px, dy - py) > rd + pr + 1
                                                                   for px, py, pr in placed):
                break
        else:
            continue
        placed.append((dx, dy, rd))
        ds = _pick(rng, SHAPES)
        if ds == 'ring':
            ds = 'circle'
        dcol = _jitter_colour(_pick(rng, list(ALL_COLOURS.values())), rng, 30)
        dm = shape_mask(ds, dx, dy, rd, rng.uniform(0, 6.3))[..., None]
        img = img * (1 - dm) + dcol * dm
    # main object
    col = _jitter_colour(ALL_COLOURS[a['colour']], rng)
    lum = 0.299 * col[0] + 0.587 * col[1] + 0.114 * col[2]
    target = 15.0 if lum > 150 else 245.0
    sec = col * 0.55 + target * 0.45
    pat = texture_pattern(a['texture'], cx, cy, rng)[..., None]
    fill = col * (1 - pat) + sec * pat
    mk = shape_mask(a['shape'], cx, cy, r, rot)[..., None]
    img = img * (1 - mk) + fill * mk
    a.update(cx=float(cx), cy=float(cy), r=float(r), rot=float(rot))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- captions
_MENTION_P = {'shape': 0.85, 'colour': 0.7, 'texture': 0.5, 'size': 0.35, 'bg': 0.3}


def _np_phrase(a: Dict, m: Dict, rng) -> str:
    """Noun phrase built from the mentioned attributes, e.g. 'large red striped star'."""
    words = []
    if 'size' in m:
        words.append(_pick(rng, SIZE_ADJ[a['size']]))
    if 'colour' in m:
        words.append(a['colour'])
    post = ''
    if 'texture' in m:
        if rng.random() < 0.7:
            words.append(_pick(rng, TEXTURE_ADJ[a['texture']]))
        else:
            post = ' with ' + _pick(rng, TEXTURE_WITH[a['texture']])
    if 'shape' in m:
        words.append(_pick(rng, SHAPE_NOUNS[a['shape']]) if rng.random() < 0.3 else a['shape'])
    else:
        words.append(_pick(rng, GENERIC_NOUNS))
    return ' '.join(words) + post


def _attr_phrase(attr: str, value: str, rng) -> str:
    if attr == 'shape':
        return _pick(rng, SHAPE_PHRASES[value])
    if attr == 'colour':
        return _pick(rng, colour_phrases(value))
    if attr == 'texture':
        return _pick(rng, TEXTURE_PHRASES[value])
    if attr == 'size':
        return _pick(rng, SIZE_PHRASES[value])
    if attr == 'bg':
        return _pick(rng, BG_PHRASES[value])
    raise ValueError(attr)


def make_caption(a: Dict, rng: np.random.Generator) -> Tuple[str, Dict]:
    """Return (caption, mentioned-attribute dict)."""
    m = {k: a[k] for k in ATTRS if rng.random() < _MENTION_P[k]}
    if a['colour'] in MUTED and 'colour' in m and rng.random() < 0.5:
        del m['colour']
    if not m:
        k = _pick(rng, ['shape', 'colour'])
        m[k] = a[k]
    t = rng.random()
    if t < 0.48:      # classic partial description
        np_ = _np_phrase(a, m, rng)
        pre = _pick(rng, PREFIXES)
        cap = (pre + ' ' + _article(np_) + ' ' + np_) if pre else (np_ if rng.random() < 0.5 else _article(np_) + ' ' + np_)
        if 'bg' in m:
            cap += ' ' + _pick(rng, BG_SUFFIX[a['bg']])
    elif t < 0.60:    # tag lists
        keys = list(m)
        rng.shuffle(keys)
        vals = []
        for k in keys:
            if k == 'shape':
                vals.append(a['shape'])
            elif k == 'colour':
                vals.append(a['colour'])
            elif k == 'texture':
                vals.append(_pick(rng, TEXTURE_ADJ[a['texture']]))
            elif k == 'size':
                vals.append(a['size'])
            else:
                vals.append(a['bg'] + ' background')
        cap = _pick(rng, [', ', ' ', '; ', ' | ']).join(vals)
    elif t < 0.82:    # "X, which has P and Q." -- the description format
        keys = list(m)
        rng.shuffle(keys)
        n_in_head = int(rng.integers(0, len(keys) + 1)) if rng.random() < 0.5 else 0
        head_keys, ph_keys = keys[:n_in_head], keys[n_in_head:]
        r_ = rng.random()
        if head_keys:
            hm = {k: m[k] for k in head_keys}
            np_ = _np_phrase(a, hm, rng)
            head = _article(np_) + ' ' + np_
        elif r_ < 0.35:
            head = pseudo_word(rng)            # unknown name -> must be ignored
        elif r_ < 0.5:
            head = 'this ' + _pick(rng, GENERIC_NOUNS)
        else:
            g = _pick(rng, GENERIC_NOUNS)
            head = _article(g) + ' ' + g
        phrases = [_attr_phrase(k, m[k], rng) for k in ph_keys]
        if not phrases:
            cap = head
        else:
            conn = _pick(rng, [', which has ', ', which has ', ' which has ', ' with ', ', it has ', ' that has '])
            cap = head + conn + (' and '.join(phrases) if len(phrases) < 3 else ', '.join(phrases[:-1]) + ' and ' + phrases[-1])
        if rng.random() < 0.6:
            cap += '.'
    elif t < 0.93:    # web noise
        np_ = _np_phrase(a, m, rng)
        cap = np_
        n, w = int(rng.integers(0, 9999)), pseudo_word(rng)
        if rng.random() < 0.6:
            cap = _pick(rng, WEB_PREFIX).format(n=n, w=w) + ' ' + cap
        if rng.random() < 0.6:
            cap = cap + ' ' + _pick(rng, WEB_SUFFIX).format(n=n, w=w)
        if 'bg' in m:
            cap += ' ' + _pick(rng, BG_SUFFIX[a['bg']])
    else:             # short sentences
        s = a['shape'] if 'shape' in m else 'object'
        parts = []
        if 'colour' in m:
            parts.append(a['colour'])
        if 'texture' in m:
            parts.append(_pick(rng, TEXTURE_ADJ[a['texture']]))
        if 'size' in m:
            parts.append(_pick(rng, SIZE_ADJ[a['size']]))
        if parts:
            cap = f'the {s} is ' + ' and '.join(parts)
        else:
            cap = f'there is {_article(s)} {s} in this picture'
        if 'bg' in m:
            cap += ' ' + _pick(rng, BG_SUFFIX[a['bg']])
    return cap.strip(), m


def sample_pair(rng: np.random.Generator, domain: str = 'pretrain', fixed: Optional[Dict] = None):
    a = sample_attrs(rng, domain, fixed)
    img = render(a, rng)
    cap, m = make_caption(a, rng)
    return img, cap, a, m


def batch(seed: int, n: int, domain: str = 'pretrain', p_clean: float = 0.0):
    """Deterministic batch: (uint8 images [n,64,64,3], captions, attr dicts, mention dicts).
    A fraction p_clean of the images are "clean" (solid fill, plain background, no distractors)."""
    rng = np.random.default_rng(seed)
    imgs, caps, attrs, ments = [], [], [], []
    for _ in range(n):
        if rng.random() < p_clean:
            a = sample_attrs(rng, domain, fixed={'texture': 'solid', 'bg': _pick(rng, ['dark', 'light'])})
            a['n_distractors'] = 0
            img = render(a, rng)
            c, m = make_caption(a, rng)
            i = img
        else:
            i, c, a, m = sample_pair(rng, domain)
        imgs.append(i); caps.append(c); attrs.append(a); ments.append(m)
    return np.stack(imgs), caps, attrs, ments


if __name__ == '__main__':  # quick preview: python generator.py out.png
    import sys
    out = sys.argv[1] if len(sys.argv) > 1 else 'synthworld_preview.png'
    imgs, caps, _, _ = batch(0, 48)
    rng = np.random.default_rng(1)
    sh = [render(sample_attrs(rng, 'shift'), rng) for _ in range(16)]
    allim = np.concatenate([imgs, np.stack(sh)])
    grid = allim.reshape(8, 8, IMG, IMG, 3).transpose(0, 2, 1, 3, 4).reshape(8 * IMG, 8 * IMG, 3)
    Image.fromarray(grid).resize((8 * IMG * 2, 8 * IMG * 2), Image.NEAREST).save(out)
    for i, c in enumerate(caps):
        print(i, c)
