require ["fileinto", "mailbox", "imap4flags", "variables", "vacation", "editheader", "body", "regex", "relational", "comparator-i;ascii-numeric", "foreverypart", "mime", "duplicate", "copy", "reject"];
if header :matches "Subject" "*i*" { set "x" "${1}"; addflag "$${x}"; }
if body :raw :contains "body" { fileinto :create "B/${x}"; }
if header :regex "List-Id" "<(.*)>" { fileinto :copy "Lists"; }
foreverypart { if header :mime :type "Content-Type" "text" { addheader "X-T" "1"; } }
if not duplicate { vacation :days 1 "away"; }
if size :over 10K { reject "big"; }
