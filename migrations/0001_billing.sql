CREATE TABLE `credits` (
	`reference` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`amount_nano` integer NOT NULL,
	`source` text NOT NULL,
	`created_at` integer DEFAULT (unixepoch('subsec') * 1000) NOT NULL,
	FOREIGN KEY (`account_id`) REFERENCES `accounts`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `credits_account_idx` ON `credits` (`account_id`);--> statement-breakpoint
CREATE TABLE `payment_events` (
	`id` text PRIMARY KEY NOT NULL,
	`type` text NOT NULL,
	`account_id` text,
	`amount_nano` integer,
	`signed_at` integer NOT NULL,
	`created_at` integer DEFAULT (unixepoch('subsec') * 1000) NOT NULL
);
--> statement-breakpoint
ALTER TABLE `chutes` ADD `cached_prompt_price_nano_per_m` integer;--> statement-breakpoint
ALTER TABLE `invocations` ADD `claimed_prompt_tokens` integer;--> statement-breakpoint
ALTER TABLE `invocations` ADD `claimed_completion_tokens` integer;--> statement-breakpoint
ALTER TABLE `invocations` ADD `hold_nano` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `invocations` ADD `miner_earnings_nano` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE INDEX `invocations_miner_idx` ON `invocations` (`miner_id`);--> statement-breakpoint
ALTER TABLE `accounts` DROP COLUMN `credit_nano`;