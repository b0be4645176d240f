"""What the client reads on the display: plain words, short lines, one idea at a time.

Each function gives a :class:`~controller.screens.Screen` in a language: the machine's
own words come from the message catalogs (controller/locale/), staff's words (the hub's
name, the signposting messages, where else to go) are shown as staff wrote them. The
paragraphs are in order of importance: on a screen that gives nothing, where else to go
comes right after the headline; a small display turns pages, and leaves nothing out.
"""

from __future__ import annotations

from controller.i18n import Language, codes, language
from hal.screens import Screen


def english() -> Language:
    return language("en")


def _hints(t: Language, language_button: int | None, say_button: int | None
           ) -> tuple[list[str], tuple[tuple[str, int], ...]]:
    """How to change language and to hear the screen: in words, and as symbols with the
    buttons' numbers, which need no reading (a client who cannot read this language can
    still find the way out of it)."""
    words, symbols = [], []
    if language_button is not None and len(codes()) > 1:
        words.append(t.gettext("Language: button {button}").format(button=language_button))
        symbols.append(("language", language_button))
    if say_button is not None:
        words.append(t.gettext("To hear this, press {button}.").format(button=say_button))
        symbols.append(("speech", say_button))
    return words, tuple(symbols)


def idle(hub_open: bool, hub_name: str, t: Language | None = None,
         language_button: int | None = None, say_button: int | None = None) -> Screen:
    t = t or english()
    paragraphs = [t.gettext("Free. No names. No limits."), t.gettext("Press a button for a pack.")]
    if hub_open:
        paragraphs.append(t.gettext("{hub} is open now - come in!").format(hub=hub_name))
    words, symbols = _hints(t, language_button, say_button)
    return Screen("idle_hub_open" if hub_open else "idle", tuple(paragraphs + words), t.code,
                  hints=symbols)


def vending(product_name: str, t: Language | None = None, product: str | None = None) -> Screen:
    t = t or english()
    return Screen("vending", (t.gettext("Getting your {product}...").format(product=product_name),
                              t.gettext("Please wait.")), t.code, pictogram=product)


def thank_you(message: str | None, hub_open: bool, hub_name: str, certain: bool = True,
              t: Language | None = None) -> Screen:
    t = t or english()
    paragraphs = [t.gettext("Thank you.")]
    if not certain:
        paragraphs.append(t.gettext("If nothing came out, press again."))
    if message:  # the signposting message matters more than saying where the pack is
        paragraphs.append(message)
    if hub_open:
        paragraphs.append(t.gettext("{hub} is open now - come in!").format(hub=hub_name))
    paragraphs.append(t.gettext("Take your pack below."))
    return Screen("thank_you" if certain else "thank_you_unsure", tuple(paragraphs), t.code,
                  pictogram="thanks")


def sorry(product_name: str, alternative: str, t: Language | None = None,
          product: str | None = None, empty: bool = True) -> Screen:
    """No slot could give ``product``: counted ``empty`` ("none left"), or jammed, faulty or
    taken out of use ("cannot give"). Where else to go comes right after."""
    t = t or english()
    headline = (t.gettext("Sorry, no {product} left in here.") if empty
                else t.gettext("Sorry, cannot give {product} right now."))
    return Screen("sorry" if empty else "cannot_give", (headline.format(product=product_name),
                                                        alternative),
                  t.code, pictogram=product, crossed=True)


def cannot_dispense(alternative: str, t: Language | None = None) -> Screen:
    t = t or english()
    return Screen("cannot_dispense", (t.gettext("Sorry, the machine cannot give packs right now."),
                                      alternative), t.code, pictogram="pack", crossed=True)


def out_of_service(alternative: str, t: Language | None = None) -> Screen:
    t = t or english()
    return Screen("out_of_service", (t.gettext("Sorry, this machine is closed for now."),
                                     alternative), t.code, pictogram="pack", crossed=True)


def service(t: Language | None = None) -> Screen:
    t = t or english()
    return Screen("service", (t.gettext("Being restocked."), t.gettext("Back in a few minutes.")),
                  t.code, pictogram="service")
