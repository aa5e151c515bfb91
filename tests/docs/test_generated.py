"""The READMEs' generated blocks (tests/docs/generate.py) are what the code makes of them today:
each role's variable table from its argument spec, the bridge's configuration reference from
default-config.yml byte for byte. `make docs` rewrites them."""

from __future__ import annotations

import generate


def test_every_generated_block_is_current():
    stale = []
    for readme, named in generate.blocks().items():
        text = readme.read_text(encoding="utf-8")
        for name, body in named.items():
            if generate.render(text, name, body) != text:
                stale.append(f"{readme.relative_to(generate.ROOT)}: {name}")
    assert not stale, "generated blocks out of date, run `make docs`:\n" + "\n".join(stale)


def test_the_bridge_readme_embeds_the_configuration_reference():
    assert generate.BRIDGE_README in generate.blocks()
    text = generate.BRIDGE_README.read_text(encoding="utf-8")
    assert generate.DEFAULT_CONFIG.read_text(encoding="utf-8") in text
