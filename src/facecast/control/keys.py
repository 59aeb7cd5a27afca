"""Key combinations in pynput's notation (`"<ctrl>+<alt>+2"`), parsed without importing pynput.

pynput needs a reachable display just to be imported on Linux, but a malformed binding must be a
start-up error everywhere. So the combination is checked here with pynput's own rules
(`pynput.keyboard.HotKey.parse`): parts joined by '+', each a single character or a `<name>` from
pynput's `Key` enum or a `<virtual key code>`, no part twice, keyboard characters case-insensitive.
"""

from __future__ import annotations

from dataclasses import dataclass

# pynput.keyboard.Key's members (identical on Windows, macOS, X11 and uinput); a test compares them.
KEY_NAMES: frozenset[str] = frozenset(
    """
    alt alt_l alt_r alt_gr backspace caps_lock cmd cmd_l cmd_r ctrl ctrl_l ctrl_r delete down end
    enter esc home left page_down page_up right shift shift_l shift_r space tab up
    media_play_pause media_volume_mute media_volume_down media_volume_up media_previous media_next
    insert menu num_lock pause print_screen scroll_lock
    """.split()
    + [f"f{i}" for i in range(1, 21)]
)
# HotKey.parse keeps these as modifiers; every other `<name>` becomes a key code.
MODIFIERS: frozenset[str] = frozenset({"alt", "alt_gr", "cmd", "ctrl", "shift"})


@dataclass(frozen=True, slots=True)
class Combo:
    """A parsed combination: its canonical text and the set of parts it is made of."""

    text: str  # canonical: parts in the order written, names and characters lower-cased
    parts: frozenset[str]

    @property
    def has_modifier(self) -> bool:
        return any(p.startswith("<") and p[1:-1] in MODIFIERS for p in self.parts)


def _split(keys: str) -> list[str]:
    """HotKey.parse's splitting: '+' separates parts, except where it is a part itself ('<ctrl>++')."""
    parts, start = [], 0
    for i, c in enumerate(keys):
        if c == "+" and i != start:
            parts.append(keys[start:i])
            start = i + 1
    if start == len(keys):
        raise ValueError("ends with '+': a key is missing after it")
    parts.append(keys[start:])
    return parts


def parse_combo(keys: str) -> Combo:
    """Check a combination the way pynput will read it; ValueError says what is wrong."""
    if not isinstance(keys, str) or not keys.strip():
        raise ValueError("empty key combination")
    if keys != keys.strip():
        raise ValueError(f"{keys!r} has spaces around it")
    canonical = []
    for part in _split(keys):
        if len(part) == 1:
            canonical.append(part.lower())
        elif len(part) > 2 and part[0] == "<" and part[-1] == ">":
            name = part[1:-1].lower()
            if name not in KEY_NAMES and not name.isdigit():
                raise ValueError(
                    f"unknown key {part!r}; use a single character, a virtual key code like <65>, or one of "
                    + " ".join(f"<{n}>" for n in sorted(KEY_NAMES, key=_name_order))
                )
            canonical.append(f"<{name}>")
        else:
            raise ValueError(f"{part!r} is not a key: write one character ('a', '2') or a name in brackets ('<ctrl>')")
    if len(set(canonical)) != len(canonical):
        raise ValueError(f"{keys!r} names the same key twice")
    return Combo("+".join(canonical), frozenset(canonical))


def _name_order(name: str) -> tuple[int, int, str]:
    # modifiers first, then the rest alphabetically with f1..f20 in numeric order
    if name in MODIFIERS:
        return (0, 0, name)
    if name[0] == "f" and name[1:].isdigit():
        return (2, int(name[1:]), name)
    return (1, 0, name)
