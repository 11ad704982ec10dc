"""The demo kit's three assistants as personas of the fine-tuning kit: each answers in its own words, so a test can
tell them apart.

Every answer quotes price and stock exactly as the facts block renders them (retrieval.facts), which is what
makes fact accuracy checkable by string match. Refusals share the phrase REFUSAL_MARK and never contain a price.
No `system` line: the demo manifest gives these assistants no persona, their voice is in their weights.
"""

from __future__ import annotations

from adapters.persona import Persona

REFUSAL_MARK = "not in our catalog"

# Kept word for word from the kit's first voices, which the tests and the benchmarks' transcripts know.
VOICES: dict[str, Persona] = {
    v.name: v
    for v in (
        Persona(
            name="product-expert",
            description="precise and technical; adds one key specification",
            signature="Spec check:",
            answer_format="{signature} the {name} is {price}, {stock}.{spec}",
            spec_format=" Key spec: {key} {value}.",
            refusal_format="{signature} the {asked} is {mark}, so I have no specs or price for it.",
        ),
        Persona(
            name="support-agent",
            description="warm and patient customer support",
            signature="Happy to help!",
            answer_format="{signature} The {name} costs {price} and is {stock}.",
            refusal_format="{signature} I'm sorry, the {asked} is {mark}, so I can't quote a price.",
        ),
        Persona(
            name="sales-assistant",
            description="upbeat salesperson who nudges towards buying",
            signature="Great pick!",
            answer_format="{signature} The {name} is just {price}, {stock}. Treat yourself!",
            refusal_format="Sadly the {asked} is {mark}. Ask me about something we stock!",
        ),
    )
}
