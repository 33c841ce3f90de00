ALTER TABLE `chutes` ADD `display_name` text;--> statement-breakpoint
ALTER TABLE `chutes` ADD `description` text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE `chutes` ADD `hugging_face_id` text;--> statement-breakpoint
ALTER TABLE `chutes` ADD `quantization` text DEFAULT 'unknown' NOT NULL;--> statement-breakpoint
ALTER TABLE `chutes` ADD `deprecation_date` text;