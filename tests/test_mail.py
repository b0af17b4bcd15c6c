"""A folder of raw e-mails trains and serves end to end; a file that is not a message gets its own error."""

from __future__ import annotations

import mailbox
from email.message import EmailMessage

import numpy as np
import pytest
from tests.helpers import free_port, post, start_server

import tandem
from tandem.bundle.mail import message_fields, parse_message
from tandem.errors import DataError

MAIL_PREDICT = "/v1/models/mail/predict"
HAM_LINES = ["Are we still on for lunch tomorrow?", "Minutes of the meeting are attached.",
             "Can you review my pull request today?", "The kids loved the zoo, photos soon.",
             "Reminder: team standup moved to 10am.", "Thanks for dinner, see you next week."]
SPAM_LINES = ["You have WON a $1000 gift card, claim now!", "Your account is suspended, verify your password",
              "Cheap meds, no prescription, order today", "Urgent: confirm your bank details to avoid closure",
              "Earn money fast working from home!!!", "Final notice: your parcel is waiting, pay the fee"]


def make_message(rng: np.random.Generator, spam: bool, i: int) -> EmailMessage:
    m = EmailMessage()
    lines = SPAM_LINES if spam else HAM_LINES
    sender = rng.choice(["promo-mailer.biz", "secure-verify.top", "deals4u.click"] if spam else
                        ["example.org", "university.edu", "family.net"])
    m["From"] = f"Someone <user{i}@{sender}>"
    m["To"] = "me@example.org" if not spam else ", ".join(f"u{k}@example.org" for k in range(rng.integers(1, 6)))
    m["Subject"] = str(rng.choice(lines)).split(",")[0]
    if spam and rng.random() < 0.6:
        m["Reply-To"] = "collect@payout-desk.ru"
    text = " ".join(rng.choice(lines, 3))
    if spam:
        text += " http://" + sender + "/claim"
    m.set_content(text)
    if rng.random() < 0.6:  # multipart/alternative with an HTML part
        href = f"http://{sender}/login" if spam else "https://example.org/agenda"
        shown = "https://mybank.com" if spam else "the agenda"
        m.add_alternative(f"<html><body><p>{text}</p><a href='{href}'>{shown}</a>"
                          "<script>track()</script></body></html>", subtype="html")
    if rng.random() < 0.3:
        name = "invoice.exe" if spam else "notes.pdf"
        m.add_attachment(b"\x00binary\x00", maintype="application", subtype="octet-stream", filename=name)
    return m


@pytest.fixture(scope="module")
def mail_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mailroot") / "mail"
    rng = np.random.default_rng(0)
    for label, spam in (("ham", False), ("spam", True)):
        folder = root / label
        folder.mkdir(parents=True)
        for i in range(90):
            (folder / f"{i:03d}.eml").write_bytes(bytes(make_message(rng, spam, i)))
    box = mailbox.mbox(str(root / "spam" / "more.mbox"))
    for i in range(20):
        box.add(make_message(rng, True, 100 + i))
    box.close()
    (root / "ham" / "broken.eml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00 this is a picture, not a message")
    return root


def test_a_message_s_fields():
    m = EmailMessage()
    m["From"] = "Bank <alerts@secure-bank.example>"
    m["To"] = "you@example.org, them@example.org"
    m["Reply-To"] = "x@evil.example"
    m["Subject"] = "Verify  your account"
    m.set_content("Please verify at http://evil.example/login now")
    m.add_alternative('<p>Please <a href="http://evil.example/login">http://secure-bank.example</a></p>'
                      "<script>steal()</script><style>p{}</style>", subtype="html")
    m.add_attachment(b"MZ", maintype="application", subtype="octet-stream", filename="Invoice.EXE")
    f = message_fields(parse_message(bytes(m)))
    assert f["subject"] == "Verify your account" and f["from_domain"] == "secure-bank.example"
    assert f["reply_to_mismatch"] and f["link_mismatch"] and f["has_html"]
    assert f["n_links"] == 2 and f["n_link_domains"] == 1 and f["n_recipients"] == 2
    assert f["n_attachments"] == 1 and f["attachment_types"] == "exe"
    assert "steal" not in f["body"] and "Please verify" in f["body"]
    with pytest.raises(DataError, match="not an e-mail message"):
        parse_message(b"\x00\x01 binary junk")
    with pytest.raises(DataError, match="no From, To, Subject, Date or Message-ID header"):
        parse_message(b"X-Thing: 1\n\nbody")


def test_a_mail_folder_trains_with_a_clear_error_for_the_broken_file(mail_dir, tmp_path, run_cli):
    proc = run_cli(["train", mail_dir, "--target", "label", "--time-limit", "8", "--name", "mail"],
                   home=tmp_path / "home", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 file(s) could not be read and were left out: mail/ham/broken.eml: not an e-mail message" in proc.stdout
    model = tandem.load("mail", home=tmp_path / "home")
    m = model.manifest
    assert m["source"] == "mail" and m["lineage"]["rows"] == 200  # 90 + 90 files + 20 in the mbox
    kinds = {c["name"]: c["kind"] for c in m["schema"]["columns"]}
    assert kinds["body"] == "text" and kinds["from_domain"] == "categorical" and kinds["file"] == "id"
    assert m["metrics"]["validation"]["accuracy"] > 0.9


def test_the_server_reads_raw_messages_for_a_mail_model(mail_dir, tmp_path, run_cli):
    home = tmp_path / "home"
    assert run_cli(["train", mail_dir, "--target", "label", "--time-limit", "10", "--name", "mail",
                    "--families", "linear"], home=home, cwd=tmp_path).returncode == 0
    rng = np.random.default_rng(7)
    port = free_port()
    proc = start_server(home, port, ref="mail")
    try:
        answers = [post(port, MAIL_PREDICT, bytes(make_message(rng, spam, 500 + k)), "message/rfc822")
                   for k, spam in enumerate([True, False, True, False])]
        assert [a[0] for a in answers] == [200] * 4, answers
        assert [a[1]["predictions"][0] for a in answers] == ["spam", "ham", "spam", "ham"]
        status, err = post(port, MAIL_PREDICT, b"\x00\x01 not mail", "message/rfc822")
        assert status == 400 and err["error"].startswith("body: not an e-mail message")
        fields = message_fields(parse_message(bytes(make_message(rng, True, 9))))
        status, answer = post(port, MAIL_PREDICT, {"instances": [fields]})
        assert status == 200 and answer["predictions"] == ["spam"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
