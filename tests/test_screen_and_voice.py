"""The client's screen and voice: every screen fits every display in every language, the
character LCD and the graphic screen driven through their libraries, the board's LCD under
real MicroPython, the language button, and speech measured from espeak-ng's own WAV."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime

import pytest

from controller import showcase
from controller.config import ConfigError
from controller.i18n import languages
from hal.glyphs import drawable
from hal.graphic import FONT_FILES, MARGIN, GraphicScreen, Mixed, has_glyph, layout_pages
from hal.hd44780 import CharacterLcd, render_pages
from hal.screens import Screen, hint_line
from hal.settings import DisplaySettings
from simulator.hd44780 import HD44780
from tests.conftest import Rig, make_config
from tests.daemon_process import nspvend
from tests.wire import MICROPYTHON

CHARACTER = [(20, 4)]  # the shipped character LCDs: the board's and the hd44780 default
GRAPHIC = [(240, 240), (320, 240)]  # ST7789, ILI9341
LATIN = [code for code, lang in languages().items() if lang.latin]
ESPEAK, SOX = shutil.which("espeak-ng"), shutil.which("sox")


def screens(code: str) -> list[tuple[str, Screen]]:
    config = showcase.demo_config()
    return list(showcase.every_screen(config, languages()[code]))


def words_run(line: str, paragraphs: list[str]) -> bool:
    """``line`` is whole words, one after another, of one of the paragraphs."""
    words = line.split()
    for paragraph in paragraphs:
        text = paragraph.split()
        for i in range(len(text) - len(words) + 1):
            if text[i:i + len(words)] == words:
                return True
    return False


MISSING_FONTS = [str(p) for files in FONT_FILES.values() for p in files if not p.exists()]
# drawn without its fonts, a screen is Pillow's fallback: nothing here would mean anything
needs_fonts = pytest.mark.skipif(bool(MISSING_FONTS), reason="fonts missing (scripts/setup "
                                 "installs fonts-dejavu-core and fonts-noto-core): "
                                 + ", ".join(MISSING_FONTS))


GIVES_NOTHING = ("sorry", "cannot_give", "cannot_dispense", "out_of_service")


def in_order(words: list[str], seen: list[str]) -> bool:
    """``words`` appear in ``seen`` one after another, other words in between allowed."""
    it = iter(seen)
    return all(word in it for word in words)


@pytest.mark.parametrize("code", LATIN)
@pytest.mark.parametrize("cols, rows", CHARACTER)
def test_every_screen_is_shown_whole_on_a_character_lcd_page_by_page(code, cols, rows):
    """Nothing a client needs is dropped: every word of every paragraph is on some page, in
    the letters the LCD can show (ı and ş kept), within its size, no word cut; the headline
    heads every page; where else to go comes right after it."""
    for name, screen in screens(code):
        pages = render_pages(screen, cols, rows)
        headline = pages[0][:len(render_pages(Screen(name, screen.paragraphs[:1]), cols,
                                              rows)[0])]
        paragraphs = list(screen.paragraphs) + (
            [hint_line(screen.hints)] if screen.hints else [])
        kept = headline if len(headline) <= rows // 2 else []  # heads every page if short
        seen: list[str] = []
        for number, page in enumerate(pages):
            assert 1 <= len(page) <= rows, (code, name, page)
            for line in page:
                assert len(line) <= cols and all(drawable(ch) for ch in line), (code, name, line)
                assert words_run(line, paragraphs), f"{code} {name}: {line!r} cuts a word"
            if len(pages) > 1:
                assert page[:len(kept)] == kept, (code, name, number)
            seen += " ".join(page[len(kept):] if number else page).split()
        for paragraph in paragraphs:
            assert in_order(paragraph.split(), seen), f"{code} {name}: {paragraph!r} is lost"
        if name in GIVES_NOTHING:  # where else to go, right after the headline
            after = seen[len(screen.paragraphs[0].split()):]
            assert after[:2] == screen.paragraphs[1].split()[:2], (code, name, pages)


def test_turkish_keeps_its_letters_on_a_character_lcd():
    pages = render_pages(dict(screens("tr"))["idle"], 20, 4)
    text = " ".join(line for page in pages for line in page)
    assert "ı" in text and "İsim" in text and "Ücretsiz" in text
    assert "Sinir" not in text and "basin" not in text


@needs_fonts
@pytest.mark.parametrize("code", list(languages()))
@pytest.mark.parametrize("width, height", GRAPHIC)
def test_every_screen_is_shown_whole_on_a_graphic_screen_page_by_page(code, width, height):
    for name, screen in screens(code):
        pages = layout_pages(screen, width, height)
        seen: dict[int, list[str]] = {}
        for _, placed in pages:
            assert placed and placed[0][0] == 0 or not screen.paragraphs[0], (code, name)
            for index, face, lines, top in placed:
                if index or not seen.get(0):
                    seen.setdefault(index, []).extend(" ".join(lines).split())
                for line in lines:
                    assert face.getlength(line) <= width - 2 * MARGIN, (code, name, line)
                    runs = face.runs(line) if isinstance(face, Mixed) else [(face, line)]
                    missing = [ch for run_face, run in runs for ch in run
                               if not has_glyph(run_face, ch)]
                    assert not missing, f"{code} {name}: {missing} drawn as boxes"
                ascent, descent = face.getmetrics()
                assert top + len(lines) * (ascent + descent + 2) <= height - MARGIN + 2
        for index, paragraph in enumerate(screen.paragraphs):
            assert seen.get(index, []) == paragraph.split(), f"{code} {name}: {index} lost"


def test_nspvend_screens_prints_every_screen_page_by_page_within_20_by_4():
    for code in LATIN:
        result = nspvend("screens", "--display", "hd44780", "--lang", code)
        assert result.returncode == 0, result.stderr
        blocks = re.split(r"^== (\S+)\n", result.stdout, flags=re.M)[1:]
        names = blocks[0::2]
        assert {"idle", "vending", "thank_you_1", "sorry", "cannot_give", "out_of_service",
                "service", "cannot_dispense", "idle_hub_open"} <= set(names), names
        for name, body in zip(names, blocks[1::2], strict=True):
            for number, page in enumerate(re.split(r"^-- page (\d+)\n", body, flags=re.M)[::2]):
                lines = page.rstrip("\n").split("\n")
                assert 1 <= len(lines) <= 4 and all(len(line) <= 20 for line in lines), (
                    code, name, number, lines)
    listed = nspvend("screens", "--languages")
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert [row[0] for row in rows] == list(languages())
    assert "reviewed" in listed.stdout and "not reviewed" in listed.stdout
    refused = nspvend("screens", "--display", "hd44780", "--lang", "bn")
    assert refused.returncode == 2 and "graphic screen" in refused.stderr


@needs_fonts
def test_nspvend_screens_draws_pictures_of_a_graphic_screen(tmp_path):
    from PIL import Image

    result = nspvend("screens", "--display", "st7789", "--lang", "bn", "--png", str(tmp_path))
    assert result.returncode == 0, result.stderr
    pictures = sorted(tmp_path.glob("bn-*-*.png"))
    assert len(pictures) >= 10 and (tmp_path / "bn-sorry-1.png").exists()
    for path in pictures:
        image = Image.open(path)
        assert image.size == (240, 240) and image.getbbox() is not None
        data = image.convert("RGB").tobytes()
        yellow = sum(1 for i in range(0, len(data), 3)
                     if data[i] > 200 and data[i + 1] > 150 and data[i + 2] < 80)
        assert yellow > 100, f"{path.name}: no headline drawn"


def test_the_character_lcd_through_rplcd_shows_what_render_says():
    model = HD44780(20, 4)

    class Bus:  # smbus2's interface, wired to the LCD's bytes
        def write_byte(self, address: int, value: int) -> None:
            assert address == 0x27
            model.write(value)

        def write_byte_data(self, *args: int) -> None:
            raise AssertionError("a PCF8574 takes single bytes")

        def close(self) -> None:
            pass

    lcd = CharacterLcd(DisplaySettings(kind="hd44780"), bus=Bus())
    for code in LATIN:
        for _, screen in screens(code):
            pages = render_pages(screen, 20, 4)
            assert lcd.show(screen) == len(pages)
            for number, page in enumerate(pages):
                if number:
                    lcd.turn_page()
                assert model.shown() == page + [""] * (4 - len(page)), (code, number)
    assert model.display_on and model.backlight


@needs_fonts
def test_the_graphic_screen_puts_the_picture_on_lumas_device():
    from luma.core.device import dummy

    device = dummy(width=320, height=240, mode="RGB")
    screen = GraphicScreen(DisplaySettings(kind="ili9341"), device=device)
    screen.show(Screen("vending", ("Getting your foil...", "Please wait."), "en", "foil"))
    assert device.image.getbbox() is not None
    assert device.image.tobytes() == screen.image.tobytes()


@pytest.mark.skipif(MICROPYTHON is None, reason="micropython not installed")
def test_the_board_lcd_driver_under_micropython_shows_the_lines_the_host_sends():
    from hal.serial import BoardDisplay
    from tests.test_firmware import Rigged

    rigged = Rigged()
    try:
        display = BoardDisplay(rigged.link)
        screen = Screen("thank_you", ("Teşekkürler.", "Naloxone saves lives: press 6 for a kit.",
                                      "Paketinizi aşağıdan alın."), "tr")
        display.show(screen)
        rigged.dispenser.recall(1, None)  # a round trip: the frames before it have arrived
        data = rigged.bench.ask({"op": "state"})["lcd_bytes"]
    finally:
        rigged.close()
    model = HD44780(20, 4)
    for byte in data:
        model.write(byte)
    assert model.shown() == ["Teşekkürler.", "Naloxone saves", "lives: press 6 for a", "kit."]
    assert model.shown() == render_pages(screen, 20, 4)[0]


class Voice:
    """A speaker that keeps what it was asked to say (the real one is tested with espeak)."""

    def __init__(self) -> None:
        self.said: list[tuple[str, str, int]] = []

    def say(self, text: str, voice: str, volume: int) -> None:
        self.said.append((text, voice, volume))

    def hush(self) -> None:
        self.said.append(("(hushed)", "", 0))


def voiced_rig(tmp_path, **speech) -> tuple[Rig, Voice]:
    config = make_config(tmp_path, display={"languages": ["en", "tr", "pl"],
                                            "allow_unreviewed": True, "language_button": 6,
                                            "messages": ["Free BBV testing"]},
                         speech={"enabled": True, "say_again_button": 7, **speech})
    rig = Rig(config)
    voice = Voice()
    rig.vm.speaker = voice
    rig.fill_all()
    return rig, voice


def test_the_language_button_cycles_languages_and_a_quiet_minute_brings_back_the_first(tmp_path):
    rig, _ = voiced_rig(tmp_path)
    assert rig.hw.display.lines[0] == "Free. No names. No limits."
    assert "Language: button 6" in rig.hw.display.lines
    rig.press(6)
    assert rig.hw.display.lines[0] == "Ücretsiz. İsim sorulmaz. Limit yok."
    rig.press(2)  # a vend in Turkish
    assert rig.hw.display.lines[0] == "Teşekkürler."
    assert rig.model.packs_dropped()[3] == 1
    rig.press(6)
    assert rig.hw.display.lines[0] == "Dziękujemy."  # the same screen, now in Polish
    rig.tick(59)
    assert rig.vm.language.code == "pl"
    rig.tick(2)  # a quiet minute, and the thank-you screen is over
    assert rig.vm.language.code == "en" and rig.vm.screen == "idle"
    assert rig.hw.display.lines[0] == "Free. No names. No limits."
    assert rig.ledger.totals() == {"foil": {"confirmed": 1, "unconfirmed": 0}}


def test_the_say_it_again_button_speaks_the_screen_quieter_in_quiet_hours(tmp_path):
    rig, voice = voiced_rig(tmp_path, quiet_hours=["Daily 01:00-05:00"], volume=120,
                            quiet_volume=30)
    rig.press(7)
    text, speaker_voice, volume = voice.said[-1]
    assert text.startswith("Free. No names. No limits.") and speaker_voice == "en-gb"
    assert volume == 30  # the rig's clock says 02:00
    rig.press(6)
    rig.press(7)
    assert voice.said[-1][1] == "tr" and voice.said[-1][0].startswith("Ücretsiz")
    rig.clock.jump(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    rig.press(7)
    assert voice.said[-1][2] == 120
    assert rig.model.packs_dropped() == {1: 0, 2: 0, 3: 0, 4: 0}  # no button here vends


def test_every_screen_is_spoken_when_configured_and_speech_never_blocks_a_vend(tmp_path):
    rig, voice = voiced_rig(tmp_path, every_screen=True)
    voice.said.clear()
    rig.press(1)
    assert [v[0].split(" ")[0] for v in voice.said] == ["(hushed)", "Getting", "(hushed)",
                                                        "Thank"]  # each screen cuts the last


def test_the_voice_says_what_the_screen_shows_all_of_it_and_stops_with_the_screen(tmp_path):
    rig, voice = voiced_rig(tmp_path, every_screen=True)
    rig.model.inject("jam", 3)
    voice.said.clear()
    rig.press(2)  # foil's only slot jams: cannot give, and where else to go
    spoken = voice.said[-1][0]
    assert spoken.startswith("Sorry, cannot give foil right now.")
    assert rig.config.alternative_in("en") in spoken  # every page's words, not only the first's
    rig.tick(rig.vm._screen_until - rig.clock.monotonic())
    assert rig.vm.screen == "idle" and voice.said[-2][0] == "(hushed)"  # cut at the change


def test_staff_words_are_shown_in_the_clients_language_where_staff_translated_them(tmp_path):
    config = make_config(tmp_path, display={
        "languages": ["en", "tr"], "allow_unreviewed": True, "language_button": 6,
        "messages": ["Free BBV testing"], "alternative": "Try the Hub.",
        "translations": {"tr": {"messages": ["Ücretsiz BBV testi"], "alternative": "Hub'a gelin."}}})
    rig = Rig(config)
    rig.fill_all()
    rig.press(6)
    rig.press(2)
    assert rig.hw.display.lines[:2] == ["Teşekkürler.", "Ücretsiz BBV testi"]
    rig.tick(10)
    assert rig.command(cmd="disable", slot=3)["ok"]
    rig.press(2)
    assert "Hub'a gelin." in rig.hw.display.lines
    assert rig.command(cmd="enable", slot=3)["ok"]
    assert rig.command(cmd="set_messages", messages=["Open late on Fridays"])["ok"]
    rig.tick(70)
    rig.press(6)
    rig.press(2)  # staff's new message has no translation: shown as they wrote it
    assert rig.hw.display.lines[:2] == ["Teşekkürler.", "Open late on Fridays"]
    assert rig.ledger.totals() == {"foil": {"confirmed": 2, "unconfirmed": 0}}


@pytest.mark.parametrize("translations, problem", [
    ({"xx": {"alternative": "?"}}, "'xx' is not a language nspvend has"),
    ({"tr": {"messages": ["bir", "iki"]}}, "display.translations.tr.messages: has 2 messages; it needs 1"),
    ({"tr": {"alternatif": "?"}}, "display.translations.tr.alternatif: is not a setting"),
    ({"tr": "Hub'a gelin."}, "display.translations.tr: must be a table"),
])
def test_translations_of_staff_words_are_checked(tmp_path, translations, problem):
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, display={"messages": ["Free BBV testing"], "translations": translations})
    assert problem in str(caught.value)


@pytest.mark.parametrize("setting, problem", [
    ({"languages": ["en", "tr"]}, "have not been reviewed"),
    ({"languages": ["en", "xx"]}, "is not a language nspvend has"),
    ({"languages": ["bn"], "allow_unreviewed": True, "kind": "hd44780"}, "Latin letters"),
    ({"language_button": 1}, "already product syringe-1ml's"),
    ({"kind": "hologram"}, "must be one of"),
])
def test_display_settings_are_checked(tmp_path, setting, problem):
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, display=setting)
    assert problem in str(caught.value)


@pytest.mark.skipif(ESPEAK is None or SOX is None, reason="espeak-ng or sox not installed")
def test_espeak_speaks_every_language_out_loud_and_in_its_own_voice(tmp_path):
    from controller.i18n import VOICES
    from hal.settings import SpeechSettings
    from hal.speech import Speaker

    speaker = Speaker(SpeechSettings(enabled=True, output=str(tmp_path)))
    try:
        for code in languages():
            _, screen = screens(code)[0]
            speaker.say(screen.to_speak(), VOICES[code], 100)
            assert speaker.wait_spoken(list(languages()).index(code) + 1, 30), speaker.failed
    finally:
        speaker.close()
    waves = sorted(tmp_path.glob("*.wav"))
    assert [w.stem.split("-", 1)[1] for w in waves] == [VOICES[c] for c in languages()]
    for wav in waves:
        stat = subprocess.run([SOX, str(wav), "-n", "stat"], capture_output=True, text=True)
        figures = dict(re.findall(r"^([A-Za-z ()]+?):\s+(-?[\d.]+)", stat.stderr, re.M))
        assert float(figures["Length (seconds)"]) > 1.0, wav.name
        assert float(figures["RMS     amplitude"]) > 0.01, wav.name  # not silence
