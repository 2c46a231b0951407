-- Why a guard rail denied an action, as a kind code decides on (the detail keeps the words).
-- Rows denied before this column existed get their kind from the detail they were written with.
ALTER TABLE actions ADD COLUMN denial TEXT
    CHECK (denial IS NULL OR denial IN ('protected_account', 'hourly_limit'));
UPDATE actions
   SET denial = CASE WHEN detail LIKE 'rate limit%' THEN 'hourly_limit' ELSE 'protected_account' END
 WHERE state = 'denied';
