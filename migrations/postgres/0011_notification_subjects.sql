-- What a notification is about (an action's or a detection's id), so reminders find the last
-- word about a pending detection; and a key that makes a message that several instances may
-- decide to send at once (a reminder, a day's digest) exist only once.
ALTER TABLE notifications ADD COLUMN about TEXT;
ALTER TABLE notifications ADD COLUMN dedupe_key TEXT;
CREATE UNIQUE INDEX notifications_dedupe_key ON notifications (dedupe_key);
CREATE INDEX notifications_about_created ON notifications (about, created_at);
