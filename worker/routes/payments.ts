import { Hono } from "hono";
import type { AppEnv } from "../env.ts";

export const paymentRoutes = new Hono<AppEnv>();
